"""Planted API keys, and a scan of every byte a run wrote for any of them."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from urllib.parse import quote, quote_plus

from tests.support.s3server import AWS_SECRET_ACCESS_KEY

OPENAI_KEY = "sk-proj-PLANTED0penaiKey0000000000000000001"
ANTHROPIC_KEY = "sk-ant-api03-PLANTEDanthropicKey00000000002"
AZURE_KEY = "PLANTEDazureApiKey000000000000003"
GOOGLE_KEY = "AIzaPLANTEDgoogleKey00000000000000004"
QUERY_KEY = "PLANTEDqueryKey0000000000000005"
#: Gateway and custom auth headers (Cloudflare AI Gateway, Portkey, Helicone).
GATEWAY_KEY = "cfut_PLANTEDgatewayKey00000000000006"
PORTKEY_KEY = "pk-PLANTEDportkeyKey0000000000007"
HELICONE_KEY = "sk-helicone-PLANTEDheliconeKey0008"
#: A key sent in a JSON request body field.
BODY_KEY = "sk-PLANTEDbodyFieldKey000000000009"
#: Signed-URL parameters: the signature, and a credential with characters that get escaped.
URL_SIGNATURE = "PLANTEDurlSignature00000000010"
AMZ_CREDENTIAL = "AKIAPLANTEDCREDENTIAL11/20240101/us-east-1/s3/aws4_request"
#: Account identifiers, in request and response headers.
OPENAI_ORG = "org-PLANTEDopenaiOrganization012"
OPENAI_PROJECT = "proj_PLANTEDopenaiProject0000013"
ANTHROPIC_ORG = "5a0b1c2d-PLANTED-anthropic-org-0014"
#: A cookie a provider sets (OpenAI answers carry Cloudflare's).
COOKIE = "PLANTEDcloudflareCookie000000015"
#: Keys some tests send in their own literal forms.
OTHERS = ("sk-unit-test-secret-0001", "sk-test-recordings-0001", "sk-demo-PLANTED")
ALL = (
    OPENAI_KEY,
    ANTHROPIC_KEY,
    AZURE_KEY,
    GOOGLE_KEY,
    QUERY_KEY,
    GATEWAY_KEY,
    PORTKEY_KEY,
    HELICONE_KEY,
    BODY_KEY,
    URL_SIGNATURE,
    AMZ_CREDENTIAL,
    OPENAI_ORG,
    OPENAI_PROJECT,
    ANTHROPIC_ORG,
    COOKIE,
    #: The S3 fixture's planted AWS secret key: in no object, log or stats file (SPEC §11).
    AWS_SECRET_ACCESS_KEY,
    *OTHERS,
)
#: Files a test writes with a key in them on purpose (to prove the scan finds one).
CONTROL_SUFFIX = ".secret-control"


def encodings(secret: str) -> set[bytes]:
    """The secret as written raw, in UTF-16, percent-encoded (either case) and in base64."""
    raw = secret.encode()
    escaped = {quote(raw, safe=""), quote(raw), quote_plus(raw)}
    return (
        {raw, secret.encode("utf-16-le")}
        | {e.encode() for e in escaped}
        | {re.sub("%[0-9A-F]{2}", lambda m: m[0].lower(), e).encode() for e in escaped}
        | {base64.b64encode(raw).rstrip(b"="), base64.urlsafe_b64encode(raw).rstrip(b"=")}
    )


def files_containing_secrets(*roots: Path, secrets: tuple[str, ...] = ALL) -> list[str]:
    """Every file under the roots that holds a planted secret, raw or in common encodings."""
    needles = set().union(*(encodings(s) for s in secrets))
    found = []
    for root in roots:
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        paths = [p for p in paths if root.is_file() or not p.name.endswith(CONTROL_SUFFIX)]
        for path in paths:
            data = path.read_bytes()
            found += [f"{path}: {n[:12]!r}…" for n in needles if n in data]
    return found
