"""The model-host process and the web side's handle on it.

The model lives in its own process (``main``), started with a fresh interpreter (never a fork:
CUDA and MPS do not survive one). What can hang, hog the GIL or crash in native code (imports,
regexes in an adapter's config, a big pickle, a driver) runs there, where it can be killed; the
web process serves. ``supervisor.Host`` spawns it, drives it over a socket (``protocol``) and
turns its death into a typed outcome. Nothing here imports Django.
"""
