"""A DNS server on 127.0.0.1 that answers as Kubernetes DNS answers for a headless Service: one
SRV record per ready pod (`_http._tcp.<service>.<ns>.svc.cluster.local`, target the pod's own
name, the port the Service names) with each target's A record in the additional section, and the
targets' A records asked alone. The records change while it runs, as pods become ready and leave.

Built on dnslib's server (wire format from the library, not by hand). What it cannot see: CoreDNS
itself (its 5 s TTL and cache, truncation of an answer larger than the client's EDNS0 size) and
the API server's endpoint updates; tests/unit/test_admission_plan.py checks that the largest
fleet's answer fits the size HAProxy announces.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from dnslib import QTYPE, RCODE, RR, SRV, A, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSServer

TTL = 5  # CoreDNS's kubernetes plugin answers with 5 s


@dataclass
class Records:
    """SRV name -> [(target, address, port)]; a name with none, and every other, is NXDOMAIN (as
    CoreDNS answers for a headless Service without ready endpoints: coredns/coredns#1814)."""

    srv: dict[str, list[tuple[str, str, int]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    queries: list[tuple[str, str]] = field(default_factory=list)

    def set(self, name: str, pods: list[tuple[str, str, int]]) -> None:
        with self.lock:
            self.srv[name] = list(pods)

    def answer(self, request: DNSRecord) -> DNSRecord:
        reply = request.reply()
        qname, qtype = str(request.q.qname), QTYPE[request.q.qtype]
        with self.lock:
            self.queries.append((qname, qtype))
            targets = {t: addr for pods in self.srv.values() for t, addr, _ in pods}
            if qtype == "SRV" and self.srv.get(qname):
                for target, addr, port in self.srv[qname]:
                    reply.add_answer(RR(qname, QTYPE.SRV, ttl=TTL, rdata=SRV(0, 100, port, target)))
                    reply.add_ar(RR(target, QTYPE.A, ttl=TTL, rdata=A(addr)))
            elif qtype == "A" and qname in targets:
                reply.add_answer(RR(qname, QTYPE.A, ttl=TTL, rdata=A(targets[qname])))
            elif qname not in targets:  # a Service without ready pods has no name either
                reply.header.rcode = RCODE.NXDOMAIN
        return reply


class _Resolver(BaseResolver):  # type: ignore[misc]
    def __init__(self, records: Records) -> None:
        self.records = records

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        return self.records.answer(request)


class _Quiet:
    """dnslib's server logs every query to stdout by default."""

    def log_recv(self, *_: object) -> None: ...
    def log_send(self, *_: object) -> None: ...
    def log_request(self, *_: object) -> None: ...
    def log_reply(self, *_: object) -> None: ...
    def log_truncated(self, *_: object) -> None: ...
    def log_data(self, *_: object) -> None: ...

    def log_error(self, handler: object, e: object) -> None:
        raise RuntimeError(f"DNS server error: {e}")


@contextmanager
def dns_server(port: int) -> Iterator[Records]:
    """UDP on 127.0.0.1:`port`, in a thread of this process; stopped on exit."""
    records = Records()
    server = DNSServer(_Resolver(records), address="127.0.0.1", port=port, logger=_Quiet())
    server.start_thread()
    try:
        yield records
    finally:
        server.stop()
        server.server.server_close()
