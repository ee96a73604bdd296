"""moto's DynamoDB (and other services) on 127.0.0.1:PORT, single-threaded.

The default threaded `moto_server` is not atomic: concurrent conditional updates on one item
can all pass their condition (measured: 21-26 admitted where 20 fit). Serving one request at a
time makes every conditional write atomic, as DynamoDB's are. See shared/FINDINGS.md.

Usage: python infra/moto_server.py PORT
"""

import sys

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: moto_server.py PORT")
    port = int(sys.argv[1])
    run_simple(
        "127.0.0.1",
        port,
        DomainDispatcherApplication(create_backend_app),
        threaded=False,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
