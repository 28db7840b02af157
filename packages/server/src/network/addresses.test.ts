import { describe, expect, it } from "vitest";
import { blockAt, intToIp, ipToInt, parseSubnet, subnetCidr } from "./addresses.js";

describe("address blocks", () => {
  it("round-trips IPv4", () => {
    expect(intToIp(ipToInt("10.213.1.254"))).toBe("10.213.1.254");
  });
  it("carves /30 blocks, skipping block 0", () => {
    expect(parseSubnet("10.213.0.0/16").blocks).toBe(16384);
    expect(blockAt("10.213.0.0/16", 1)).toEqual({ index: 1, hostIp: "10.213.0.5", sandboxIp: "10.213.0.6", prefix: 30 });
    expect(blockAt("10.213.0.0/16", 16383).sandboxIp).toBe("10.213.255.254");
    expect(() => blockAt("10.213.0.0/16", 0)).toThrow();
    expect(() => blockAt("10.213.0.0/16", 16384)).toThrow();
  });
  it("clears host bits for the firewall", () => {
    expect(subnetCidr("10.213.7.9/16")).toBe("10.213.0.0/16");
    expect(subnetCidr("192.168.5.0/24")).toBe("192.168.5.0/24");
  });
  it("rejects silly subnets", () => {
    expect(() => parseSubnet("10.0.0.0/30")).toThrow();
    expect(() => parseSubnet("nonsense")).toThrow();
  });
});
