"""Build of the optional C speedups; everything else is in pyproject.toml.

`optional=True`: without a compiler the install still succeeds and Sluice
uses the pure-Python versions (sluice.protocols.postgres.rows,
sluice.masking.hits, sluice.policy.sql, sluice.recording.format).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "sluice.protocols.postgres._speedups",
            ["src/sluice/protocols/postgres/_speedups.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
        Extension(
            "sluice.masking._hits",
            ["src/sluice/masking/_hits.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
        Extension(
            "sluice.recording._seal",
            ["src/sluice/recording/_seal.c"],
            extra_compile_args=["-O2"],
            libraries=["crypto"],
            optional=True,
        ),
        Extension(
            "sluice.policy._sqlkey",
            ["src/sluice/policy/_sqlkey.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
    ]
)
