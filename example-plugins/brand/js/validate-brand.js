// `validate-brand` in JavaScript: a brand name needs at least `min-length`
// characters (config, default 2). The same contract as the Rust step.
import { createStep, InvalidData, StepResponse } from "wasaga";

export const { invoke, compensate } = createStep((brand, ctx) => {
  const minimum = ctx.config?.["min-length"] ?? 2;
  const length = brand.name.trim().length;
  if (length < minimum) {
    throw new InvalidData(`brand name '${brand.name}' is too short: ${length} characters, at least ${minimum} needed`, {
      permanent: true,
    });
  }
  return new StepResponse(brand);
});
