"""`assign-default-logo` in Python: sets a brand's `logo_url` to the
`default-logo-url` config value; compensation removes it again."""

from wasaga import NotFound, StepResponse, create_step, log


def invoke(brand, ctx):
    logo = ctx.settings().get("default-logo-url")
    if logo is None:
        raise NotFound("config key 'default-logo-url' is not set in [config]", permanent=True)
    updated = ctx.entities("brand").update(brand["id"], {"logo_url": logo})
    log.info(f"brand {brand['id']} gets the default logo")
    return StepResponse(updated, compensation=brand["id"])


def compensate(brand_id, ctx):
    if brand_id is not None:
        ctx.entities("brand").update(brand_id, {"logo_url": None})


WitWorld = create_step(invoke, compensate)
