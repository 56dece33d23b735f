"""Time to the first answer of `perturb masks`, before and after a change, in one run.

Three waits a new user meets, each timed as a whole command (process start to exit, or to the
first committed batch), for the code in this checkout and for another checkout given with
``--baseline-tree`` (for example a `git worktree` of an older commit), alternating runs so both
see the same machine load:

- ``bad path``: `perturb masks <missing folder>` until it exits with its error;
- ``complete re-run``: `perturb masks` on a store that already holds every image, until it exits;
- ``first batch``: `perturb masks DATA -n 1 -b 2` until the first batch file is committed.
"""
