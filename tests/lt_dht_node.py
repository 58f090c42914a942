"""A libtorrent DHT node for tests/node/test_libtorrent_dht.py, run by the system Python that
Debian's python3-libtorrent is built for.

Usage: lt_dht_node.py MOLE_PORT SAVE_DIR. It listens on 127.0.0.1 on a port the kernel picks
(TCP and the DHT's UDP; a port probed free and handed over could be taken by another test in
between), says it in its first line ({"event": "ready", "port": N}), is told of one DHT node
(mole, on 127.0.0.1:MOLE_PORT), reads JSON commands from stdin ({"op": "add_torrent" |
"get_peers" | "state", "hash": hex}) and prints one JSON line per DHT event worth checking.
(This binding cannot pass dht_announce() its flags, so libtorrent's own announce comes from
adding a torrent: it then announces its listen port to the DHT.)
"""

from __future__ import annotations

import json
import select
import sys
import warnings

import libtorrent as lt  # type: ignore[import-not-found]


def say(obj: dict[str, object]) -> None:
    print(json.dumps(obj), flush=True)


def main() -> None:
    mole_port, save_dir = int(sys.argv[1]), sys.argv[2]
    ses = lt.session(
        {
            "listen_interfaces": "127.0.0.1:0",
            "enable_dht": True,
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            "dht_bootstrap_nodes": "",
            "alert_mask": lt.alert.category_t.dht_notification
            | lt.alert.category_t.dht_operation_notification
            | lt.alert.category_t.status_notification,
            # one host plays both nodes: lift libtorrent's one-node-per-IP rules
            "dht_restrict_routing_ips": False,
            "dht_restrict_search_ips": False,
        }
    )
    # Ready once the DHT's UDP socket is bound: its port is the one mole must bootstrap from.
    port = 0
    while not port:
        ses.wait_for_alert(1000)
        for a in ses.pop_alerts():
            if isinstance(a, lt.listen_succeeded_alert) and a.socket_type == lt.socket_type_t.udp:
                port = a.port
            elif isinstance(a, lt.listen_failed_alert):
                say({"event": "failed", "error": a.message()})
                return
    ses.add_dht_node(("127.0.0.1", mole_port))
    say({"event": "ready", "port": port})
    while True:
        readable, _, _ = select.select([sys.stdin], [], [], 0.02)
        if readable:
            line = sys.stdin.readline()
            if not line:
                return
            cmd = json.loads(line)
            if cmd["op"] == "add_torrent":
                atp = lt.add_torrent_params()
                atp.info_hashes = lt.info_hash_t(lt.sha1_hash(bytes.fromhex(cmd["hash"])))
                atp.save_path = save_dir
                ses.add_torrent(atp)
            elif cmd["op"] == "get_peers":
                ses.dht_get_peers(lt.sha1_hash(bytes.fromhex(cmd["hash"])))
            elif cmd["op"] == "state":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    say({"event": "stats", "nodes": ses.status().dht_nodes})
        for a in ses.pop_alerts():
            if isinstance(a, lt.dht_announce_alert):
                say({"event": "announce", "ip": str(a.ip), "port": a.port,
                     "hash": str(a.info_hash)})  # fmt: skip
            elif isinstance(a, lt.dht_get_peers_reply_alert):
                say({"event": "peers", "peers": [list(p) for p in a.peers()],
                     "hash": str(a.info_hash)})  # fmt: skip


if __name__ == "__main__":
    main()
