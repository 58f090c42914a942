"""A libtorrent DHT node for the lab's `service: libtorrent-dht` containers (an independent
BEP 5 implementation, Debian's python3-libtorrent). Copied into the image; run by its python3.

Usage: lt_dht_service.py [BOOTSTRAP_IP:PORT ...]. Listens on 0.0.0.0:6881; prints one JSON line
every 2 s with its routing table size, and one per announce_peer it accepted (`announce`: an
announce from a mole node proves libtorrent took mole's messages as valid).
"""

import json
import sys
import time
import warnings

import libtorrent as lt  # type: ignore[import-not-found]


def main() -> None:
    ses = lt.session(
        {
            "listen_interfaces": "0.0.0.0:6881",
            "enable_dht": True,
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            "dht_bootstrap_nodes": "",
            "alert_mask": lt.alert.category_t.dht_notification,
        }
    )
    for boot in sys.argv[1:]:
        host, _, port = boot.rpartition(":")
        ses.add_dht_node((host, int(port)))
    last = 0.0
    while True:
        ses.wait_for_alert(500)
        for a in ses.pop_alerts():
            if isinstance(a, lt.dht_announce_alert):
                print(json.dumps({"event": "announce", "ip": str(a.ip), "port": a.port,
                                  "hash": str(a.info_hash)}), flush=True)  # fmt: skip
        if time.monotonic() - last > 2:
            last = time.monotonic()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                print(json.dumps({"event": "stats", "nodes": ses.status().dht_nodes}), flush=True)


if __name__ == "__main__":
    main()
