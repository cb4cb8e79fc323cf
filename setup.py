"""The optional C part of the UDP listener (mifdns/aio/_udpbatch.c): recvmmsg/sendmmsg batches.

Everything else is in pyproject.toml. Without a C compiler the build skips it (optional=True)
and the listener uses its pure-Python loop; `mifdns ctl status` says which one runs.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "mifdns.aio._udpbatch",
            ["mifdns/aio/_udpbatch.c", "mifdns/aio/_lane.c"],
            depends=["mifdns/aio/_lane.h"],
            optional=True,
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
        ),
    ],
)
