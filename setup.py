"""Build of the optional C extension; everything else is declared in pyproject.toml.

`protocol._car_index` frames CAR sections at C speed for backfills (see
indexer/backfill/car_index.py). It is optional: without a C compiler and the Python headers the
build goes on without it and the backfill uses its pure-Python framing (same results, slower).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "protocol._car_index",
            sources=["protocol/_car_index.c"],
            extra_compile_args=["-O2", "-std=c11"],
            optional=True,
        )
    ]
)
