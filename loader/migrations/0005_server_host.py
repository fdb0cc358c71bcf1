from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("loader", "0004_job_merge")]

    operations = [
        migrations.AddField(model_name="serverprocess", name="host_pid", field=models.IntegerField(blank=True, null=True)),
        migrations.AddField(model_name="serverprocess", name="lost", field=models.JSONField(blank=True, default=dict)),
    ]
