"""`validate-brand` in Python: a brand name needs at least `min-length`
characters (config, default 2). The same contract as the Rust step."""

from wasaga import InvalidData, StepResponse, create_step


def invoke(brand, ctx):
    minimum = (ctx.config or {}).get("min-length", 2)
    name = brand["name"]
    length = len(name.strip())
    if length < minimum:
        raise InvalidData(
            f"brand name '{name}' is too short: {length} characters, at least {minimum} needed",
            permanent=True,
        )
    return StepResponse(brand)


WitWorld = create_step(invoke)
