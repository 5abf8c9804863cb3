"""Which Iceberg warehouse is read or written, and the check that a client reads the one its relay writes.

A relay tells its clients which warehouse it writes (in every reply and notification, see
``proto/ingestor.proto``). Names alone prove nothing: two catalogs both hold ``trading.ohlc``.
The Iceberg table uuid does: it is fixed when a table is created, so a client that reads
another catalog, or a table created empty by mistake under the same name, sees another uuid.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import WarehouseMismatchError

__all__ = ["WarehouseIdentity", "check_same_warehouse"]


@dataclass(frozen=True)
class WarehouseIdentity:
    """One warehouse: its catalog (a URI with passwords removed, or the catalog's name) and the
    catalog's ``warehouse`` property if any (both for messages only), the namespace, and the name
    and table uuid of the candle and coverage tables. An empty uuid means "not known" and is never
    compared."""

    catalog: str
    namespace: str
    ohlc_table: str = "ohlc"
    ohlc_uuid: str = ""
    coverage_table: str = "coverage"
    coverage_uuid: str = ""
    catalog_warehouse: str = ""

    def describe(self) -> str:
        """``catalog 'URI' (warehouse '…'), trading.ohlc uuid …, trading.coverage uuid …``."""
        where = f" (warehouse {self.catalog_warehouse!r})" if self.catalog_warehouse else ""
        return (f"catalog {self.catalog!r}{where}, {self.namespace}.{self.ohlc_table} uuid {self.ohlc_uuid or 'unknown'}, "
                f"{self.namespace}.{self.coverage_table} uuid {self.coverage_uuid or 'unknown'}")

    def differs_from(self, other: WarehouseIdentity) -> bool:
        """True if ``other`` is another warehouse than this one, as far as this one's known
        uuids tell (an unknown uuid here proves nothing)."""
        return bool((self.ohlc_uuid and self.ohlc_uuid != other.ohlc_uuid)
                    or (self.coverage_uuid and self.coverage_uuid != other.coverage_uuid))


def check_same_warehouse(relay: WarehouseIdentity | None, local: WarehouseIdentity, *,
                         relay_endpoint: str | None = None) -> None:
    """Raise :class:`WarehouseMismatchError` naming both warehouses if the relay writes
    another one than ``local``; ``relay=None`` (a relay that did not say: older versions) passes."""
    if relay is None or not relay.differs_from(local):
        return
    where = f"the relay at {relay_endpoint}" if relay_endpoint else "the relay"
    if relay.catalog == local.catalog and relay.catalog_warehouse == local.catalog_warehouse \
            and relay.namespace == local.namespace:
        why = ("the catalog URI is the same, but it names other tables here: it resolves to another database on "
               "each machine (a relative path, another host), or the tables were dropped and created again. ")
    else:
        why = ""
    raise WarehouseMismatchError(
        f"{where} writes the warehouse of {relay.describe()}; this client reads {local.describe()}. The candles "
        f"the relay stores would never be seen here. {why}Give the client the relay's warehouse: "
        f"iceberg_catalog_uri={relay.catalog!r} (DEXORDER_ICEBERG_CATALOG_URI, --iceberg-catalog-uri or the config "
        f"file; with a password if the relay's catalog needs one) and the same catalog_properties"
        + (f" (warehouse={relay.catalog_warehouse!r})" if relay.catalog_warehouse else "")
        + f" and namespace ({relay.namespace!r}) as `dexorder-feeds serve` uses")
