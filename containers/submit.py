"""``submit.sh``'s work, kept here for old habits: the deployment lives in :mod:`eyegc.common.deploy`.

``python containers/submit.py ...`` is ``python -m eyegc.common.deploy.submit ...``.
"""

import sys

from eyegc.common.deploy.submit import main

if __name__ == "__main__":
    sys.exit(main())
