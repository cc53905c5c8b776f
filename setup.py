"""The one compiled part, optional: hub._fanout, the fan-out's send loop (hub/_fanout.c).

Everything else is in pyproject.toml. ``optional=True``: where no C compiler or Python headers
are at hand, the install goes on without it and hub.connection runs the same loop in Python.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("hub._fanout", ["hub/_fanout.c"], optional=True)])
