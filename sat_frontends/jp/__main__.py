import sys

from sat_frontends.jp.main import main

sys.exit(main())
