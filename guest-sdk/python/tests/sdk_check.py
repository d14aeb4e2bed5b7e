"""`sdk-check` in Python: one step whose input picks an SDK feature to
exercise (the same step exists in Rust and JavaScript)."""

from wasaga import StepError, StepResponse, create_step, log
import wasaga


def invoke(input, ctx):
    op = input.get("op", "")
    if op == "create":
        brand = ctx.entities("brand").create({"name": input["name"]})
        return StepResponse({"name": brand["name"], "created": True}, compensation=brand["id"])
    if op == "fail":
        compensation = input.get("compensation")
        kwargs = {} if compensation is None else {"compensation": compensation}
        raise StepError(input.get("message", "failed on purpose"), kind=input.get("kind", "unknown"),
                        permanent=bool(input.get("permanent")), **kwargs)
    if op == "skip":
        return StepResponse.skip()
    if op == "emit":
        ctx.events().emit("sdk.emitted", input)
        return StepResponse({"emitted": True})
    if op == "context":
        return StepResponse({
            "greeting": ctx.settings().get("greeting"),
            "config": ctx.config,
            "attempt": ctx.attempt,
            "key": ctx.idempotency_key,
            "workflow": ctx.workflow,
        })
    if op == "list":
        return StepResponse({"count": len(ctx.entities("brand").list({"name": input["name"]}))})
    if op == "not-granted":
        ctx.entities("secret")
        return StepResponse(None)
    if op == "missing":
        try:
            ctx.entities("brand").get("brand_missing")
        except wasaga.NotFound as error:
            return StepResponse({"kind": error.kind})
        raise wasaga.UnexpectedState("a missing brand was found")
    raise wasaga.InvalidArgument(f"unknown op '{op}'", permanent=True)


def compensate(data, ctx):
    if isinstance(data, str):
        ctx.entities("brand").delete(data)
    log.info(f"sdk-check compensated ({ctx.step})")


WitWorld = create_step(invoke, compensate)
