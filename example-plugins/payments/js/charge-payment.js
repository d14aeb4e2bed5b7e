// charge-payment in JavaScript: the Rust step's twin (steps/charge-payment).
//
// Charges the card at the payment provider, authenticated with the `pay-key`
// secret (the step holds only a placeholder); the compensation refunds the
// charge. Outbound HTTP needs the SpiderMonkey engine:
//   node ../../guest-sdk/js/build.mjs --engine spidermonkey js/charge-payment.js charge_payment.wasm
import { createStep, StepResponse, InvalidData, Unauthorized, UnknownError, log } from "wasaga";

const provider = (ctx) => {
  const url = ctx.settings().get("provider");
  if (url === null) throw new InvalidData("[config] provider is not set", { permanent: true });
  return url;
};

export const { invoke, compensate } = createStep(
  (input, ctx) => {
    const key = ctx.secret("pay-key");
    const response = ctx.http().post(`${provider(ctx)}/v1/charges`, {
      headers: { Authorization: `Bearer ${key}` },
      json: { amount: input.amount, currency: input.currency, card: input.card, reference: input.cart },
    });
    if (response.status === 402) {
      throw new InvalidData(`the card was declined: ${response.json().error ?? "no reason given"}`, { permanent: true });
    }
    if (response.status === 401) {
      throw new Unauthorized("the payment provider refused the API key (is WASAGA_SECRET_PAY_KEY right?)", { permanent: true });
    }
    if (response.status !== 200 && response.status !== 201) {
      throw new UnknownError(`the payment provider answered ${response.status}: ${response.text()}`);
    }
    const charge = response.json();
    log.info(`charged ${input.amount} ${input.currency} as ${charge.id}`);
    return new StepResponse({ charge: charge.id, status: charge.status }, charge.id);
  },
  (charge, ctx) => {
    if (charge === null) return;
    const key = ctx.secret("pay-key");
    const response = ctx.http().post(`${provider(ctx)}/v1/refunds`, {
      headers: { Authorization: `Bearer ${key}` },
      json: { charge },
    });
    if (!response.ok) throw new UnknownError(`the refund of ${charge} failed with ${response.status}: ${response.text()}`);
    log.info(`refunded ${charge}`);
  },
);
