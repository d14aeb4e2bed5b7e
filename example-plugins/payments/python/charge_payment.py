"""charge-payment in Python: the Rust step's twin (steps/charge-payment).

Charges the card at the payment provider, authenticated with the
``pay-key`` secret (the step holds only a placeholder); the compensation
refunds the charge. Build it with::

    componentize-py -d ../../wit -w step-http componentize charge_payment -p python -p ../../guest-sdk/python -o charge_payment.wasm
"""

from wasaga import InvalidData, StepResponse, Unauthorized, UnknownError, create_step, log


def _provider(ctx):
    provider = ctx.settings().get("provider")
    if provider is None:
        raise InvalidData("[config] provider is not set", permanent=True)
    return provider


def invoke(input, ctx):
    key = ctx.secret("pay-key")
    response = ctx.http().post(
        f"{_provider(ctx)}/v1/charges",
        headers={"Authorization": f"Bearer {key}"},
        json={"amount": input["amount"], "currency": input["currency"], "card": input["card"],
              "reference": input["cart"]},
    )
    if response.status == 402:
        reason = response.json().get("error", "no reason given")
        raise InvalidData(f"the card was declined: {reason}", permanent=True)
    if response.status == 401:
        raise Unauthorized("the payment provider refused the API key (is WASAGA_SECRET_PAY_KEY right?)",
                           permanent=True)
    if response.status not in (200, 201):
        raise UnknownError(f"the payment provider answered {response.status}: {response.text()}")
    charge = response.json()
    log.info(f"charged {input['amount']} {input['currency']} as {charge['id']}")
    return StepResponse({"charge": charge["id"], "status": charge["status"]}, compensation=charge["id"])


def compensate(charge, ctx):
    if charge is None:
        return
    key = ctx.secret("pay-key")
    response = ctx.http().post(f"{_provider(ctx)}/v1/refunds", headers={"Authorization": f"Bearer {key}"},
                               json={"charge": charge})
    if not response.ok:
        raise UnknownError(f"the refund of {charge} failed with {response.status}: {response.text()}")
    log.info(f"refunded {charge}")


WitWorld = create_step(invoke, compensate)
