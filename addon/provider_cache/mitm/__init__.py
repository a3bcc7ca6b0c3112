"""The mitmproxy side: the hooks of the hit path, their options, the endpoint and mitmweb."""
