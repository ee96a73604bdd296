"""moto's DynamoDB (and other services) on 127.0.0.1:PORT, single-threaded.

The default threaded `moto_server` is not atomic: concurrent conditional updates on one item
can all pass their condition (measured: 21-26 admitted where 20 fit). Serving one request at a
time makes every conditional write atomic, as DynamoDB's are. See shared/FINDINGS.md.

Also: moto 5.2.5 adds and subtracts DynamoDB numbers with `int(value)` unless the value has a
".", so a stored number in exponent form (moto itself writes 0.00000008 back as "8E-8") makes
the next `ADD` fail with a ValueError (a rollup of sub-microdollar embedding costs did). DynamoDB
takes any number up to 38 digits, so both operands are read as Decimal here, as DynamoDB does.

Usage: python infra/moto_server.py PORT
"""

import sys
from decimal import Decimal

from moto.dynamodb.models.dynamo_type import DDBType, DynamoType

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


def _number(value: str):
    number = Decimal(value)
    return int(number) if number == number.to_integral_value() and "." not in value and "E" not in value.upper() else number


def _arithmetic(op):
    original = getattr(DynamoType, op)

    def apply(self, other):
        if self.type != other.type or not self.is_number():
            return original(self, other)
        a, b = _number(self.value), _number(other.value)
        total = a + b if op == "__add__" else a - b
        text = format(total, "f") if isinstance(total, Decimal) else str(total)
        return DynamoType({DDBType.NUMBER: text})

    setattr(DynamoType, op, apply)


_arithmetic("__add__")
_arithmetic("__sub__")


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
