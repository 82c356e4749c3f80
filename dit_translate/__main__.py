import sys

from dit_translate.cli import main

sys.exit(main())
