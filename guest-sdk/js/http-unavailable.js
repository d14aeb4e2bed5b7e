// Outbound HTTP is not available to QuickJS builds: componentize-qjs cannot
// yet pre-initialize a component that imports wasi:http/types ("mismatched
// resource types"). Build HTTP steps with `--engine spidermonkey`.
import { InvalidArgument } from "./wasaga.js";

const unavailable = () => {
  throw new InvalidArgument(
    "outbound HTTP needs the SpiderMonkey engine: build the step with `node build.mjs --engine spidermonkey`",
    { permanent: true },
  );
};

export class Response {}

export class Http {
  get() { unavailable(); }
  post() { unavailable(); }
  put() { unavailable(); }
  patch() { unavailable(); }
  delete() { unavailable(); }
  request() { unavailable(); }
}
