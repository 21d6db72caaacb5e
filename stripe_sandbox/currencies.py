"""The currencies Stripe accepts, and the smallest amount it will charge in each.

Stripe refuses an unknown currency code, and it will not charge less than a minimum per
settlement currency: an invoice whose amount due is below it is marked paid at
finalization and the amount is carried to the customer's balance for the next invoice.
"""

from __future__ import annotations

# Lowercase ISO 4217 codes of Stripe's presentment currencies.
SUPPORTED = frozenset(
    """
    usd aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bhd bif bmd bnd bob brl bsd
    bwp byn bzd cad cdf chf clp cny cop crc cve czk djf dkk dop dzd egp etb eur fjd fkp gbp
    gel gip gmd gnf gtq gyd hkd hnl htg huf idr ils inr isk jmd jod jpy kes kgs khr kmf krw
    kwd kyd kzt lak lbp lkr lrd lsl mad mdl mga mkd mmk mnt mop mur mvr mwk mxn myr mzn nad
    ngn nio nok npr nzd omr pab pen pgk php pkr pln pyg qar ron rsd rub rwf sar sbd scr sek
    sgd shp sle sos srd std szl thb tjs tnd top try ttd twd tzs uah ugx uyu uzs vnd vuv wst
    xaf xcd xof xpf yer zar zmw
    """.split()  # noqa: SIM905 - a word list reads better than 140 quoted strings
)

# Stripe's documented minimum charge amounts, in the currency's smallest unit. Currencies
# not listed here have no minimum in the sandbox.
MINIMUM_CHARGE = {
    "usd": 50,
    "aed": 200,
    "aud": 50,
    "bgn": 100,
    "brl": 50,
    "cad": 50,
    "chf": 50,
    "czk": 1500,
    "dkk": 250,
    "eur": 50,
    "gbp": 30,
    "hkd": 400,
    "huf": 17500,
    "inr": 50,
    "jpy": 50,
    "mxn": 1000,
    "myr": 200,
    "nok": 300,
    "nzd": 50,
    "pln": 200,
    "ron": 200,
    "sek": 300,
    "sgd": 50,
    "thb": 1000,
}


def minimum_charge(currency: str) -> int:
    return MINIMUM_CHARGE.get(currency, 0)
