"""``tune/search.py`` with every trial epoch slowed by SECONDS and every seed re-run by 20 x
SECONDS (the driver tests interrupt it mid-study): ``python tests/slow_search.py SECONDS ARGS...``."""
import sys
import time

from ec4srec.search import command, study, trainable, tuner

SECONDS = float(sys.argv.pop(1))


def sleep(session, epoch, restored):      # defined in __main__: Ray ships it by value
    time.sleep(SECONDS)


def slow_seed(config_dict, seed, work_dir=None):     # in __main__ too: shipped by value
    time.sleep(20 * SECONDS)
    return trainable.retrain_seed(config_dict, seed, work_dir)


study.retrain_seed = slow_seed
constants = tuner.trial_constants
tuner.trial_constants = lambda *a, **kw: {**constants(*a, **kw), "epoch_hooks": [sleep]}

if __name__ == "__main__":
    sys.exit(command.main())
