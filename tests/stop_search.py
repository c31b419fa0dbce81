"""``tune/search.py`` with a driver fault the tests place exactly:
``python tests/stop_search.py MODE ARGS...``.

MODE ``before-fit``: the first ``Tuner.fit`` raises KeyboardInterrupt at once, as a Ctrl-C (or
a killed driver) after Ray wrote the run's ``tuner.pkl`` and before Tune's first experiment
snapshot. MODE ``keep-unsnapshotted``: such a Ray folder is left for Tune to restore as it is
(``durable.drop_unsnapshotted`` does nothing), which restarts it as an empty experiment."""
import sys

from ray import tune

from ec4srec.search import command, durable

MODE = sys.argv.pop(1)

if MODE == "before-fit":
    def interrupted_fit(self):
        raise KeyboardInterrupt("before Tune's first snapshot")
    tune.Tuner.fit = interrupted_fit
elif MODE == "keep-unsnapshotted":
    durable.drop_unsnapshotted = lambda exp, run: None
else:
    sys.exit(f"unknown mode {MODE!r}")

if __name__ == "__main__":
    sys.exit(command.main())
