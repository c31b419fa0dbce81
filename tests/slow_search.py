"""``tune/search.py`` with every trial epoch slowed by SECONDS (the driver tests interrupt it
mid-study): ``python tests/slow_search.py SECONDS ARGS...``."""
import sys
import time

from ec4srec.search import command, tuner

SECONDS = float(sys.argv.pop(1))


def sleep(session, epoch, restored):      # defined in __main__: Ray ships it by value
    time.sleep(SECONDS)


constants = tuner.trial_constants
tuner.trial_constants = lambda *a, **kw: {**constants(*a, **kw), "epoch_hooks": [sleep]}

if __name__ == "__main__":
    sys.exit(command.main())
