import sys

from kolora_core.cli import main

sys.exit(main())
