import sys

from loader.host.main import main

main(sys.argv[1:])
