/** IPv4 helpers for carving a subnet into one /30 per sandbox. */

export function ipToInt(ip: string): number {
  const parts = ip.split(".").map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) throw new Error(`bad IPv4 ${ip}`);
  return (((parts[0] as number) << 24) | ((parts[1] as number) << 16) | ((parts[2] as number) << 8) | (parts[3] as number)) >>> 0;
}

export function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
}

/** The sandbox's two addresses for block `index` of `subnet` (CIDR). */
export interface Block {
  index: number;
  hostIp: string;
  sandboxIp: string;
  prefix: 30;
}

export function parseSubnet(cidr: string): { base: number; blocks: number } {
  const [ip, bits] = cidr.split("/");
  const prefix = Number(bits);
  if (!ip || !Number.isInteger(prefix) || prefix < 8 || prefix > 28) throw new Error(`bad subnet ${cidr} (need /8../28)`);
  const mask = prefix === 0 ? 0 : (~0 << (32 - prefix)) >>> 0;
  return { base: (ipToInt(ip) & mask) >>> 0, blocks: 2 ** (30 - prefix) };
}

/** `cidr` with its host bits cleared, as nft wants it ("10.1.2.3/16" -> "10.1.0.0/16"). */
export function subnetCidr(cidr: string): string {
  return `${intToIp(parseSubnet(cidr).base)}/${cidr.split("/")[1]}`;
}

export function blockAt(cidr: string, index: number): Block {
  const { base, blocks } = parseSubnet(cidr);
  if (index < 1 || index >= blocks) throw new Error(`block ${index} outside ${cidr}`);
  const start = base + index * 4;
  return { index, hostIp: intToIp(start + 1), sandboxIp: intToIp(start + 2), prefix: 30 };
}
