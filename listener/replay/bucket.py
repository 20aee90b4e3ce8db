"""Listing a node's stream folders in the Orcasound bucket (S3 ListObjectsV2 over HTTP).

Anonymous GETs of ``?list-type=2&prefix=<node>/hls/&delimiter=/``, paginated
with continuation tokens; the XML is size-capped by the HTTP client and
refused if it declares a DOCTYPE or entities, before it is parsed.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from listener.config import check_node_name
from listener.errors import ListenerError
from listener.sources.http_client import HttpClient

log = logging.getLogger(__name__)

S3_NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
# <bucket>.s3.amazonaws.com, <bucket>.s3-us-west-2.amazonaws.com, <bucket>.s3.us-west-2....
_VIRTUAL_HOST = re.compile(r"^(?P<bucket>.+)\.s3(?:[.-][a-z0-9-]+)?\.amazonaws\.com$", re.I)
_FOLDER_NAME = re.compile(r"[0-9]{1,12}")
# Entity declarations are the door to "billion laughs" expansion; S3 never sends them.
_UNSAFE_XML = re.compile(r"<!\s*(?:DOCTYPE|ENTITY)", re.I)
# A server that keeps answering "truncated" must not keep us listing forever
# (10 000 pages of 1 000 prefixes is far beyond any node's history).
_MAX_PAGES = 10_000


@dataclass(frozen=True)
class BucketLocation:
    """Where a ``base_url`` points: the bucket, its listing endpoint, a key prefix."""

    bucket: str
    list_url: str
    key_prefix: str


def bucket_location(base_url: str) -> BucketLocation:
    """Split a config ``base_url`` into bucket, ListObjectsV2 endpoint and key prefix.

    ``https://<bucket>.s3.amazonaws.com[/prefix]`` lists at the host's root;
    any other URL is path-style, ``https://<host>/<bucket>[/prefix]``, and
    lists at ``https://<host>/<bucket>``.
    """
    parts = urlsplit(base_url)
    path = parts.path.strip("/")
    match = _VIRTUAL_HOST.match(parts.hostname or "")
    if match:
        return BucketLocation(match["bucket"], f"{parts.scheme}://{parts.netloc}/",
                              f"{path}/" if path else "")
    if not path:
        raise ListenerError(f"cannot tell the bucket from base_url {base_url!r}: expected "
                            "https://s3-<region>.amazonaws.com/<bucket> or "
                            "https://<bucket>.s3.amazonaws.com")
    bucket, _, rest = path.partition("/")
    return BucketLocation(bucket, f"{parts.scheme}://{parts.netloc}/{bucket}",
                          f"{rest}/" if rest else "")


def _parse_listing(body: bytes, url: str) -> tuple[ET.Element, str]:
    """Parse one ListObjectsV2 page safely; return its root and namespace prefix."""
    try:
        # Decoding first means an encoding declaration cannot hide a DOCTYPE
        # from the check below (e.g. UTF-16).
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ListenerError(f"{url}: bucket listing is not UTF-8 XML: {err}") from err
    if _UNSAFE_XML.search(text):
        raise ListenerError(f"{url}: refusing a bucket listing with a DOCTYPE or ENTITY "
                            "declaration (S3 never sends one)")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as err:
        raise ListenerError(f"{url}: bucket listing is not valid XML: {err}") from err
    for ns in (f"{{{S3_NAMESPACE}}}", ""):
        if root.tag == f"{ns}ListBucketResult":
            return root, ns
    raise ListenerError(f"{url}: expected an S3 ListBucketResult, got <{root.tag}>")


def list_folders(client: HttpClient, base_url: str, node: str) -> list[int]:
    """The unix times of the node's ``hls/<ts>/`` folders, ascending.

    Follows ``IsTruncated``/``NextContinuationToken`` across pages; each page
    is capped at the client's playlist size. Non-numeric folders are skipped.

    Raises:
        ListenerError: the node has no folders, or a page is unsafe or malformed.
        FetchError: the listing request failed (e.g. HTTP 403: listing not allowed).
    """
    _check_node(node)
    loc = bucket_location(base_url)
    prefix = f"{loc.key_prefix}{node}/hls/"
    folders: set[int] = set()
    token: str | None = None
    for _ in range(_MAX_PAGES):
        query = {"list-type": "2", "prefix": prefix, "delimiter": "/"}
        if token is not None:
            query["continuation-token"] = token
        url = f"{loc.list_url}?{urlencode(query)}"
        root, ns = _parse_listing(client.get(url, "playlist"), url)
        for elem in root.iterfind(f"{ns}CommonPrefixes/{ns}Prefix"):
            value = elem.text or ""
            name = value[len(prefix):].strip("/") if value.startswith(prefix) else ""
            if _FOLDER_NAME.fullmatch(name):
                folders.add(int(name))
            else:
                log.debug("ignoring %r in bucket %s: not a numeric stream folder", value,
                          loc.bucket)
        if (root.findtext(f"{ns}IsTruncated") or "").strip().lower() != "true":
            break
        next_token = root.findtext(f"{ns}NextContinuationToken")
        if not next_token or next_token == token:
            raise ListenerError(f"{url}: listing says it is truncated but gives no new "
                                "continuation token")
        token = next_token
    else:
        raise ListenerError(f"listing {prefix} in bucket {loc.bucket} did not end after "
                            f"{_MAX_PAGES} pages")
    if not folders:
        raise ListenerError(f"node {node!r} has no stream folders in bucket {loc.bucket!r} "
                            f"(nothing under {prefix}); check stream.node and stream.base_url")
    return sorted(folders)


def _check_node(node: str) -> None:
    try:
        check_node_name(node)
    except ValueError as err:
        raise ListenerError(str(err)) from err
