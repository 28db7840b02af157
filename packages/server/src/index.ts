export { startServer, type SandbarServer } from "./server.js";
export { loadConfig, type ServerConfig, type RuntimeName } from "./config.js";
export { ApiKeyService, DEFAULT_WORKSPACE, type ApiKeyView } from "./auth/api-key-service.js";
export { SqliteStore } from "./store/sqlite-store.js";
export { CONTROL_PREFIXES } from "./app.js";
export { LocalImages, type LocalImage } from "./images/local-images.js";
