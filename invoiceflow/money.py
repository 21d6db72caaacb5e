"""Money as integer minor units, and Stripe's limits on it.

Stripe takes every amount as an integer in the currency's smallest unit (cents
for USD, yen for JPY, fils for BHD). Prices typed by people arrive as decimal
*strings*; they are converted here with `decimal.Decimal`, exactly, or refused.
Nothing is ever rounded: a price that does not fit the currency is the user's
mistake to fix, not ours to guess.
"""

from __future__ import annotations

import re
from decimal import ROUND_DOWN, Decimal, localcontext

from invoiceflow.stripe_limits import MAX_AMOUNT

# Source for the currency facts below: https://docs.stripe.com/currencies
# ("Zero-decimal currencies", "Three-decimal currencies", "Supported presentment
# currencies"). Whether a currency is usable also depends on the Stripe account's
# country; only Stripe can tell that, so this list is the superset.
ZERO_DECIMAL_CURRENCIES = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga"}
    | {"pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"}
)
THREE_DECIMAL_CURRENCIES = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})

SUPPORTED_CURRENCIES: frozenset[str] = frozenset(
    {
        "usd",
        "aed",
        "afn",
        "all",
        "amd",
        "ang",
        "aoa",
        "ars",
        "aud",
        "awg",
        "azn",
        "bam",
        "bbd",
        "bdt",
        "bgn",
        "bhd",
        "bif",
        "bmd",
        "bnd",
        "bob",
        "brl",
        "bsd",
        "bwp",
        "byn",
        "bzd",
        "cad",
        "cdf",
        "chf",
        "clp",
        "cny",
        "cop",
        "crc",
        "cve",
        "czk",
        "djf",
        "dkk",
        "dop",
        "dzd",
        "egp",
        "etb",
        "eur",
        "fjd",
        "fkp",
        "gbp",
        "gel",
        "gip",
        "gmd",
        "gnf",
        "gtq",
        "gyd",
        "hkd",
        "hnl",
        "htg",
        "huf",
        "idr",
        "ils",
        "inr",
        "isk",
        "jmd",
        "jod",
        "jpy",
        "kes",
        "kgs",
        "khr",
        "kmf",
        "krw",
        "kwd",
        "kyd",
        "kzt",
        "lak",
        "lbp",
        "lkr",
        "lrd",
        "lsl",
        "mad",
        "mdl",
        "mga",
        "mkd",
        "mmk",
        "mnt",
        "mop",
        "mur",
        "mvr",
        "mwk",
        "mxn",
        "myr",
        "mzn",
        "nad",
        "ngn",
        "nio",
        "nok",
        "npr",
        "nzd",
        "omr",
        "pab",
        "pen",
        "pgk",
        "php",
        "pkr",
        "pln",
        "pyg",
        "qar",
        "ron",
        "rsd",
        "rub",
        "rwf",
        "sar",
        "sbd",
        "scr",
        "sek",
        "sgd",
        "shp",
        "sle",
        "sll",
        "sos",
        "srd",
        "std",
        "szl",
        "thb",
        "tjs",
        "tnd",
        "top",
        "try",
        "ttd",
        "twd",
        "tzs",
        "uah",
        "ugx",
        "uyu",
        "uzs",
        "vnd",
        "vuv",
        "wst",
        "xaf",
        "xcd",
        "xof",
        "xpf",
        "yer",
        "zar",
        "zmw",
    }
)

# Digits with an optional fractional part. No sign, no exponent, no NaN/Infinity,
# no spaces or separators: one spelling per amount, so nothing is misread.
_DECIMAL_RE = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_EXPONENT_RE = re.compile(r"\+?[0-9.]+[eE][+-]?[0-9]+")
# Longer strings cannot be a valid amount; the cap keeps Decimal arithmetic exact.
_MAX_PRICE_CHARS = 40


def currency_exponent(code: str) -> int:
    """Digits after the decimal point in Stripe's minor unit for `code`."""
    code = code.lower()
    if code in ZERO_DECIMAL_CURRENCIES:
        return 0
    if code in THREE_DECIMAL_CURRENCIES:
        return 3
    return 2


def parse_decimal(price: str) -> Decimal:
    """Parse a positive decimal string like '12.34'; ValueError says how to write it."""
    if not isinstance(price, str):
        raise ValueError(f"must be a decimal string like '12.34', got {price!r}")
    if len(price) > _MAX_PRICE_CHARS:
        raise ValueError(f"{price[:12]!r}... is {len(price)} characters; no amount is that long")
    if _DECIMAL_RE.fullmatch(price) is None:
        if price.lstrip().startswith("-"):
            hint = "amounts must be positive"
        elif _EXPONENT_RE.fullmatch(price):
            hint = "exponent notation is not accepted; write the digits out, e.g. '1200'"
        else:
            hint = "write only digits and an optional '.', e.g. '12.34'"
        raise ValueError(f"{price!r} is not a valid amount; {hint}")
    value = Decimal(price)
    if value == 0:
        raise ValueError(f"{price!r} is zero; amounts must be greater than zero")
    return value


def to_minor_units(price: str, currency: str) -> int:
    """Convert a decimal string to Stripe's integer minor units, exactly.

    '12.340' in USD is fine (it is exactly 1234 cents); '12.345' in USD or '12.5'
    in JPY is an error, because the only alternative would be silent rounding.
    """
    code = currency.lower()
    if code not in SUPPORTED_CURRENCIES:
        raise ValueError(f"{currency!r} is not a currency Stripe supports")
    value = parse_decimal(price)
    exponent = currency_exponent(code)
    with localcontext(prec=2 * _MAX_PRICE_CHARS):  # wide enough that scaling is exact
        scaled = value.scaleb(exponent)
    if scaled != scaled.to_integral_value():
        example = value.quantize(Decimal(1).scaleb(-exponent), rounding=ROUND_DOWN)
        suggestion = f"'{example}'" if example > 0 else f"'{Decimal(1).scaleb(-exponent)}'"
        raise ValueError(
            f"{price!r} has more decimals than {code.upper()} allows ({exponent}); "
            f"use e.g. {suggestion}"
        )
    amount = int(scaled)
    if amount > MAX_AMOUNT:
        raise ValueError(
            f"{price!r} is above Stripe's maximum amount of {format_minor_units(MAX_AMOUNT, code)}"
        )
    return amount


def format_minor_units(amount: int, currency: str) -> str:
    """Render minor units for humans: 1234 usd -> '12.34 USD', 1200 jpy -> '1200 JPY'."""
    exponent = currency_exponent(currency)
    sign, digits = ("-" if amount < 0 else ""), str(abs(amount))
    if exponent:
        digits = digits.rjust(exponent + 1, "0")
        digits = f"{digits[:-exponent]}.{digits[-exponent:]}"
    return f"{sign}{digits} {currency.upper()}"
