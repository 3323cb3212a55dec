"""Packaging for stripe-recon.

The library lives under lib/ (package_dir) and the YAML/JSON configuration under conf/ is shipped
inside the wheel as the ``stripe_recon.conf`` package, so a cluster install needs no checkout.
The version comes from one place: ``lib/stripe_recon/__init__.py``.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(
    r'__version__ = "([^"]+)"', (HERE / "lib/stripe_recon/__init__.py").read_text()
).group(1)

# pyspark and delta-spark are NOT core requirements: Glue, Databricks and a spark-submit cluster
# bring their own Spark (and Delta via --datalake-formats / the runtime), and a wheel that required
# pyspark 4 would make pip install a second, mismatched Spark there. Local use: `pip install
# "stripe-recon[spark]"` (the Makefile's `.[dev]` includes it).
CORE = [
    "great-expectations>=1.19,<2",
    "stripe>=16,<17",
    "boto3>=1.34",
    "pydantic>=2.6,<3",
    "PyYAML>=6",
]
SPARK = [
    "pyspark>=4.0.1,<4.1",
    "delta-spark>=4.0.0,<4.1",
]
DEV = SPARK + [
    "pytest>=8",
    "pytest-timeout>=2.3",  # a hung test fails by name (pytest.ini: timeout) instead of stalling CI
    "chispa>=0.10",
    "moto[server]>=5",
    "ruff>=0.5",
    "hypothesis>=6",
    "datacompy>=1.1,<2",
    "psutil>=5",
    "pyarrow>=14",  # tests write Parquet files as pandas / pyarrow do (ns timestamps, INT96)
    "pandas>=2",
]

setup(
    name="stripe-recon",
    version=VERSION,
    description="Reconcile an internal product catalog with Stripe using PySpark and Delta Lake",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    package_dir={"": "lib", "stripe_recon.conf": "conf"},
    packages=find_packages("lib") + ["stripe_recon.conf", "stripe_recon.conf.expectations"],
    package_data={
        "stripe_recon": ["log4j2.properties"],
        "stripe_recon.conf": ["*.yaml"],
        "stripe_recon.conf.expectations": ["*.json"],
    },
    install_requires=CORE,
    extras_require={"spark": SPARK, "dev": DEV},
    # recon-job: for schedulers that call the entry function instead of running the script
    # (Databricks python_wheel_task): a non-zero result is raised as SystemExit so the task fails.
    entry_points={"console_scripts": ["recon=stripe_recon.cli:main", "recon-job=stripe_recon.job_entry:job_entry"]},
)
