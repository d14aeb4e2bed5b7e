// `assign-default-logo` in JavaScript: sets a brand's `logo_url` to the
// `default-logo-url` config value; compensation removes it again.
import { createStep, log, NotFound, StepResponse } from "wasaga";

export const { invoke, compensate } = createStep(
  (brand, ctx) => {
    const logo = ctx.settings().get("default-logo-url");
    if (logo === null) throw new NotFound("config key 'default-logo-url' is not set in [config]", { permanent: true });
    const updated = ctx.entities("brand").update(brand.id, { logo_url: logo });
    log.info(`brand ${brand.id} gets the default logo`);
    return new StepResponse(updated, brand.id);
  },
  (brandId, ctx) => {
    if (brandId !== null) ctx.entities("brand").update(brandId, { logo_url: null });
  },
);
