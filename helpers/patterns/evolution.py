"""Events outlive their code: schema evolution, decided by Avro's rules (lesson 9, claim C20).

A topic keeps events for days or for ever; the code that reads them changes more often.
Whether an old reader can read a new event (or a new reader an old one) is not up to the
course: it is **Avro schema resolution**, applied by the `fastavro` library. Every event is
written with its writer's schema (``fastavro.schemaless_writer``) and carries that schema's
id in a record header (``schema_id``); the schemas live in a small :class:`SchemaRegistry`
(in memory: no registry service runs here). A reader decodes each event with
``fastavro.schemaless_reader(buffer, writer_schema, reader_schema)``: the library matches the
fields by name (or by the reader's aliases), fills a field the writer did not have from the
reader's default, skips a field the reader does not have, and raises
``SchemaResolutionError`` when a field the reader needs has neither a value nor a default.

Three versions of OrderPlaced (:data:`VERSIONS`): v2 **adds** ``currency`` with a default;
v3 **renames** ``amount`` to ``total`` (with ``amount`` as an alias). Five readers
(:data:`READERS`), each a schema a consumer was built with: two written for v1 before v2
existed (one strict, one that gave every field a default), one for v2, and two for v3 (with
and without the alias). :func:`compare_readers` publishes events of each version and reads
the topic with every reader (:class:`ReadResult`): what it read, what failed, and what it
read *wrong* (an amount or currency that differs from what was published).

:func:`upcast` reads an event of any version into the newest shape (v3), in one place, by the
same resolution: a v1 order gets the currency every v1 order meant (EUR), and a v2 order keeps
the currency it was given.
"""
from __future__ import annotations

import copy
import io
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import fastavro
from fastavro.read import SchemaResolutionError

from ..core.params import check_int
from ..kafka import clients
from ..kafka.clients import read_topic

if TYPE_CHECKING:
    from ..kafka.clients import Kafka

__all__ = [
    "LATEST",
    "READERS",
    "VERSIONS",
    "Order",
    "ReadResult",
    "SchemaError",
    "SchemaRegistry",
    "SchemaResolutionError",
    "compare_readers",
    "decode",
    "encode",
    "order_payload",
    "publish_versions",
    "read_all",
    "upcast",
]

_ID = {"name": "order_id", "type": "string"}
_CUSTOMER = {"name": "customer", "type": "string"}
_CURRENCY = {"name": "currency", "type": "string", "default": "EUR", "doc": "v1 orders were all in euros"}

#: The writers' schemas, by version.
VERSIONS: dict[int, dict[str, Any]] = {
    1: {"type": "record", "name": "OrderPlaced", "namespace": "shop",
        "fields": [_ID, {"name": "amount", "type": "double"}, _CUSTOMER]},
    2: {"type": "record", "name": "OrderPlaced", "namespace": "shop",
        "fields": [_ID, {"name": "amount", "type": "double"}, _CUSTOMER, _CURRENCY]},
    3: {"type": "record", "name": "OrderPlaced", "namespace": "shop",
        "fields": [_ID, {"name": "total", "type": "double", "aliases": ["amount"]}, _CUSTOMER, _CURRENCY]},
}
LATEST = max(VERSIONS)


def _without_aliases(schema: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(schema)
    for f in out["fields"]:
        f.pop("aliases", None)
    return out


def _with_defaults(schema: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(schema)
    for f in out["fields"]:
        if f["name"] in defaults:
            f["default"] = defaults[f["name"]]
    return out


#: The readers' schemas: what each consumer was built with (and when).
READERS: dict[str, dict[str, Any]] = {
    "v1 reader": VERSIONS[1],
    "v1 reader with defaults": _with_defaults(VERSIONS[1], {"order_id": "", "amount": 0.0, "customer": ""}),
    "v2 reader": VERSIONS[2],
    "v3 reader with alias": VERSIONS[3],
    "v3 reader without alias": _without_aliases(VERSIONS[3]),
}


class SchemaError(ValueError):
    """An event a reader cannot read (its schema id is unknown, or resolution failed)."""


class SchemaRegistry:
    """Schemas by id, in memory: what a schema registry service would hold.

    :meth:`register` returns a schema's id (the same id for the same schema, compared in
    Avro's canonical form); :meth:`schema` gives the parsed schema back for an id; :meth:`table`
    lists them for printing.
    """

    def __init__(self) -> None:
        self._by_id: dict[int, tuple[dict[str, Any], Any]] = {}
        self._ids: dict[str, int] = {}

    def register(self, schema: dict[str, Any]) -> int:
        """The id of ``schema`` (registered now if new); SchemaParseException if it is not valid Avro."""
        parsed = fastavro.parse_schema(copy.deepcopy(schema))
        canonical = fastavro.schema.to_parsing_canonical_form(parsed)
        if canonical not in self._ids:
            new_id = len(self._by_id) + 1
            self._ids[canonical] = new_id
            self._by_id[new_id] = (copy.deepcopy(schema), parsed)
        return self._ids[canonical]

    def schema(self, schema_id: int) -> Any:
        """The parsed schema registered as ``schema_id``; SchemaError if there is none."""
        if schema_id not in self._by_id:
            raise SchemaError(f"no schema with id {schema_id} in the registry (known: {sorted(self._by_id)})")
        return self._by_id[schema_id][1]

    def table(self) -> list[str]:
        """One line per schema: its id and its fields (name, type, default, aliases)."""
        lines = []
        for schema_id, (raw, _) in sorted(self._by_id.items()):
            parts = []
            for f in raw["fields"]:
                extra = "".join([f" = {f['default']!r}" if "default" in f else "",
                                 f" (alias {', '.join(f['aliases'])})" if f.get("aliases") else ""])
                parts.append(f"{f['name']}: {f['type']}{extra}")
            lines.append(f"id {schema_id}: {raw['namespace']}.{raw['name']} {{{'; '.join(parts)}}}")
        return lines


@dataclass(frozen=True)
class Order:
    """What a reader made of one event (``amount`` is v1's amount or v3's total; ``currency`` is
    None for a reader whose schema has no currency)."""

    order_id: str
    amount: float
    currency: str | None
    version: int          # the writer's version, from the registry


def order_payload(version: int, order_id: str, amount: float, *, currency: str = "EUR",
                  customer: str = "ada") -> dict[str, Any]:
    """An OrderPlaced record as the writer of ``version`` builds it."""
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {sorted(VERSIONS)}, got {version!r}")
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not math.isfinite(amount) or amount < 0:
        raise ValueError(f"amount must be a finite number >= 0, got {amount!r}")
    if not isinstance(currency, str) or len(currency) != 3:
        raise ValueError(f"currency must be a 3-letter code such as 'USD', got {currency!r}")
    record: dict[str, Any] = {"order_id": order_id, "customer": customer}
    record["total" if version >= 3 else "amount"] = float(amount)
    if version >= 2:
        record["currency"] = currency
    return record


def encode(record: dict[str, Any], schema_id: int, registry: SchemaRegistry) -> tuple[bytes, list[tuple[str, bytes]]]:
    """``record`` written with the schema ``schema_id`` (``fastavro.schemaless_writer``): the
    record value and its headers (``schema_id``, ``event_type``)."""
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, registry.schema(schema_id), record)
    return buffer.getvalue(), [("schema_id", str(schema_id).encode()), ("event_type", b"OrderPlaced")]


def decode(value: bytes, headers: list[tuple[str, bytes]] | None, reader: dict[str, Any],
           registry: SchemaRegistry) -> dict[str, Any]:
    """Read one event with the ``reader`` schema: the writer's schema comes from the registry by
    the ``schema_id`` header, and ``fastavro.schemaless_reader(buffer, writer, reader)`` resolves
    the two. SchemaError (naming the library's message) if they do not resolve."""
    found = dict(headers or []).get("schema_id")
    if found is None:
        raise SchemaError("the record has no schema_id header")
    writer = registry.schema(int(found))
    try:
        data = fastavro.schemaless_reader(io.BytesIO(value), writer, fastavro.parse_schema(copy.deepcopy(reader)))
    except SchemaResolutionError as exc:
        raise SchemaError(f"SchemaResolutionError: {exc}") from exc
    if not isinstance(data, dict):
        raise SchemaError(f"expected a record, the reader schema gave {type(data).__name__}")
    return data


def upcast(value: bytes, headers: list[tuple[str, bytes]] | None, registry: SchemaRegistry) -> dict[str, Any]:
    """An event of any version in the newest shape (v3), by schema resolution: a v1 order's
    ``amount`` becomes ``total`` (the alias) and its currency the default EUR; a v2 order keeps
    its own currency."""
    return decode(value, headers, VERSIONS[LATEST], registry)


def publish_versions(kafka: Kafka, topic: str, counts: dict[int, int], registry: SchemaRegistry, *,
                     currencies: tuple[str, ...] = ("USD", "GBP", "CHF")) -> list[tuple[int, dict[str, Any]]]:
    """Publish ``counts[v]`` orders of each version v, oldest version first (acknowledged), each
    written with its version's schema and its schema id in a header. v2 and v3 orders get the
    ``currencies`` in turn (not EUR, so a reader that replaced them would show). Returns
    (version, record) in publishing order."""
    unknown = [v for v in counts if v not in VERSIONS]
    if unknown:
        raise ValueError(f"counts must be by version {sorted(VERSIONS)}, got {sorted(counts)}")
    published: list[tuple[int, dict[str, Any]]] = []
    producer = clients.producer(kafka)
    try:
        futures = []
        for version in sorted(counts):
            check_int(f"counts[{version}]", counts[version], minimum=0)
            schema_id = registry.register(VERSIONS[version])
            for _ in range(counts[version]):
                n = len(published)
                currency = currencies[n % len(currencies)]
                record = order_payload(version, f"order-{n:02d}", 10.0 + 5 * n, currency=currency)
                value, headers = encode(record, schema_id, registry)
                futures.append(producer.send(topic, key=record["order_id"].encode(), value=value, headers=headers))
                published.append((version, record))
        for future in futures:
            future.get(timeout=10)
    finally:
        producer.close(timeout=5)
    return published


@dataclass
class ReadResult:
    """What one reader made of the topic: orders read, failures, and orders read wrong (an amount,
    or a currency the reader has, that differs from what was published)."""

    reader: str
    orders: list[Order] = field(default_factory=list)
    failures: list[tuple[int, int, str]] = field(default_factory=list)   # (offset, writer version, error)
    wrong: list[tuple[Order, dict[str, Any]]] = field(default_factory=list)  # read, but not what was published

    def by_version(self, version: int) -> tuple[int, int]:
        """(read, failed) among the events of ``version``."""
        return (sum(1 for o in self.orders if o.version == version),
                sum(1 for _, v, _ in self.failures if v == version))

    def wrong_in(self, version: int) -> int:
        """Events of ``version`` read without an error but with a wrong amount or currency."""
        return sum(1 for o, _ in self.wrong if o.version == version)

    def __str__(self) -> str:
        cells = []
        for v in sorted(VERSIONS):
            read, failed = self.by_version(v)
            wrong = self.wrong_in(v)
            cells.append(f"v{v} {read} read" + (f" ({wrong} WRONG)" if wrong else "") + f", {failed} failed")
        return f"{self.reader:24} " + "; ".join(cells)


def _version_of(headers: list[tuple[str, bytes]] | None, registry: SchemaRegistry) -> int:
    schema_id = int(dict(headers or []).get("schema_id", b"0"))
    canonical = fastavro.schema.to_parsing_canonical_form(registry.schema(schema_id))
    for version, schema in VERSIONS.items():
        if fastavro.schema.to_parsing_canonical_form(fastavro.parse_schema(copy.deepcopy(schema))) == canonical:
            return version
    raise SchemaError(f"schema id {schema_id} is none of the versions {sorted(VERSIONS)}")


def read_all(kafka: Kafka, topic: str, reader: str, registry: SchemaRegistry,
             published: list[tuple[int, dict[str, Any]]]) -> ReadResult:
    """Read every event of ``topic`` with the reader schema named ``reader`` (one of
    :data:`READERS`); a failure is counted, not raised, and each order read is compared with
    what was published (amount and currency)."""
    if reader not in READERS:
        raise ValueError(f"reader must be one of {list(READERS)}, got {reader!r}")
    sent = {r["order_id"]: r for _, r in published}
    result = ReadResult(reader)
    for record in read_topic(kafka, topic):
        version = _version_of(record.headers, registry)
        try:
            data = decode(record.value, record.headers, READERS[reader], registry)
        except SchemaError as exc:
            result.failures.append((record.offset, version, str(exc)))
            continue
        order = Order(data["order_id"], float(data.get("total", data.get("amount", math.nan))),
                      data.get("currency"), version)
        result.orders.append(order)
        truth = sent.get(order.order_id, {})
        amount = truth.get("total", truth.get("amount"))
        currency_wrong = order.currency is not None and order.currency != truth.get("currency", "EUR")
        if amount != order.amount or currency_wrong:
            result.wrong.append((order, truth))
    return result


def compare_readers(kafka: Kafka, counts: dict[int, int] | None = None
                    ) -> tuple[SchemaRegistry, list[tuple[int, dict[str, Any]]], dict[str, ReadResult]]:
    """Publish orders of every version to a new topic (``counts``: version -> how many, 4 each by
    default) and read the topic with every reader of :data:`READERS`. Returns the registry, what
    was published, and reader -> :class:`ReadResult`."""
    registry = SchemaRegistry()
    topic = clients.create_topic(kafka, prefix="orders-evolving")
    published = publish_versions(kafka, topic, counts or dict.fromkeys(VERSIONS, 4), registry)
    return registry, published, {name: read_all(kafka, topic, name, registry, published) for name in READERS}
