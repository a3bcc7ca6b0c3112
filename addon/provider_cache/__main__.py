"""`python -m provider_cache`: the same as the `provider-cache` command."""

import sys

from provider_cache.cli.main import main

sys.exit(main())
