"""`python -m node.demo` (`make demo`): the whole loop on this machine."""

import sys

from node.demo.run import main

sys.exit(main())
