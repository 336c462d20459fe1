"""Imported by the Python interpreter embedded in a Flink JVM (thread mode) when it starts.

Thread mode runs every Python operator of a TaskManager in one interpreter, each on its task's
thread. A pybind11 extension (scipy's, under River) initialises itself with PyGILState_Ensure,
which deadlocks on any task thread except the one that started the interpreter: the task
thread already holds the GIL under another thread state, and waits for it forever. Which task
opens first is a race, so jobs hung at start-up now and then (seen with the user operator
stuck importing scipy.spatial while the parse task ran). Importing the operators' modules here,
on the thread that starts the interpreter, initialises those extensions where it is safe.

``pipelines.job`` puts this folder on the PYTHONPATH it hands to the JVM, so every Python process
started under that environment reads this file too: the JVM's own ``python -c`` probes (it runs
four per job start to find libpython and pemja) and any subprocess of the launching process. Only
the embedded interpreter has no command line (``sys.orig_argv`` is empty), and only it needs the
operators: importing them in every probe cost seconds each, one after the other, at every start.
"""

import sys

if not sys.orig_argv:
    import personalization.operators.erasure  # noqa: F401
    import personalization.operators.identity  # noqa: F401
    import personalization.operators.parse  # noqa: F401
    import personalization.operators.trainer  # noqa: F401
    import personalization.operators.user_profile  # noqa: F401
    import personalization.operators.rate_alerts  # noqa: F401
