"""spark-submit / Databricks ``spark_python_task`` entry for stripe-recon.

Takes exactly the arguments of the ``recon`` command and runs it in the driver; the cluster's own
session (master, jars, packages) is reused, never overridden. Example::

    spark-submit --master spark://host:7077 --py-files dist/stripe_recon.zip \\
        --packages io.delta:delta-spark_2.13:4.0.1,org.postgresql:postgresql:42.7.4 \\
        jobs/recon_job.py run --config local.yaml --set storage.root=/data/recon
"""

import sys

from stripe_recon.job_entry import run_recon

if __name__ == "__main__":
    sys.exit(run_recon(sys.argv[1:]))
