"""provider-cache: a mitmproxy addon that records and replays LLM provider traffic."""
