// `sdk-check` in JavaScript: one step whose input picks an SDK feature to
// exercise (the same step exists in Rust and Python).
import { createStep, InvalidArgument, log, NotFound, StepError, StepResponse, UnexpectedState } from "wasaga";

export const { invoke, compensate } = createStep(
  (input, ctx) => {
    switch (input.op ?? "") {
      case "create": {
        const brand = ctx.entities("brand").create({ name: input.name });
        return new StepResponse({ name: brand.name, created: true }, brand.id);
      }
      case "fail": {
        const options = { kind: input.kind ?? "unknown", permanent: input.permanent === true };
        if (input.compensation !== undefined && input.compensation !== null) options.compensation = input.compensation;
        throw new StepError(input.message ?? "failed on purpose", options);
      }
      case "skip":
        return StepResponse.skip();
      case "emit":
        ctx.events().emit("sdk.emitted", input);
        return new StepResponse({ emitted: true });
      case "context":
        return new StepResponse({
          greeting: ctx.settings().get("greeting"),
          config: ctx.config,
          attempt: ctx.attempt,
          key: ctx.idempotencyKey,
          workflow: ctx.workflow,
        });
      case "list":
        return new StepResponse({ count: ctx.entities("brand").list({ name: input.name }).length });
      case "not-granted":
        ctx.entities("secret");
        return new StepResponse(null);
      case "missing":
        try {
          ctx.entities("brand").get("brand_missing");
        } catch (error) {
          if (error instanceof NotFound) return new StepResponse({ kind: error.kind });
          throw error;
        }
        throw new UnexpectedState("a missing brand was found");
      default:
        throw new InvalidArgument(`unknown op '${input.op}'`, { permanent: true });
    }
  },
  (data, ctx) => {
    if (typeof data === "string") ctx.entities("brand").delete(data);
    log.info(`sdk-check compensated (${ctx.step})`);
  },
);
