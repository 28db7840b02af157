import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SqliteStore } from "./sqlite-store.js";
import { storeContract } from "./store-contract.js";

storeContract("sqlite", async () => new SqliteStore(join(mkdtempSync(join(tmpdir(), "sandbar-store-")), "db.sqlite")));
