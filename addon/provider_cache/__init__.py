"""provider-cache: record and replay LLM provider traffic through mitmproxy into LMDB.

The layers, each importing only the ones below it:

    cli/      the `provider-cache` command and its subcommands (SPEC §1, §7)
    mitm/     the mitmproxy side: hooks, options, flows, endpoint, mitmweb
    storage/  LMDB, the usage log, the files of a cache directory
    core/     pure logic: keys, bodies, records, stats, reports, redaction, diagnosis
"""

__version__ = "0.2.0"
