import { z } from "zod";

/** `:id` of data-plane routes: the sandbox id in dataplane_url. */
export const dataplaneParams = z.object({ id: z.string().uuid() });
