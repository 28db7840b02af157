export * from "./error-codes.js";
export * from "./error-body.js";
export * from "./schemas.js";
