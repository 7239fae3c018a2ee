// The scenario of a new user through the typescript-fetch client generated from openapi.yaml,
// against the proxy at PROXY_URL (behind Prism, which validates every request and answer);
// the one request that breaks the spec on purpose goes to DIRECT_URL, the proxy itself. test_typescript_client.py compiles it with tsc, runs it on
// Node and reads its output: one "ok <step>" line per step, then "scenario passed".
// test_python_clients.py is the same scenario through the two Python clients.

import {
  AccountApi, BlacklistApi, CampaignsApi, Configuration, ContactListsApi, MessagesApi,
  Problem, ProblemFromJSON, ReportsApi, ResponseError, SenderIdsApi, SubscribersApi,
} from "./client/index";

const STATES = new Set(["delivered", "failed", "expired", "not_delivered", "no_credit",
  "kosher_number", "hour_not_permitted", "opted_out", "not_permitted", "rejected",
  "out_of_coverage", "unknown"]);
const LONG_TEXT = "x".repeat(1005); // 7 SMS parts per recipient
// 150 recipients of 7 parts: 1050 credits, more than the demo account's 1000 but within the
// proxy's daily budget (DAILY_CREDITS); 300 of them, 2100 credits, over it.
const MANY = Array.from({ length: 300 }, (_, i) => `+9725${30000000 + i}`);
const POOR = MANY.slice(0, 150);

function check(condition: boolean, what: string, seen?: unknown): void {
  if (!condition) {
    throw new Error(`${what}${seen === undefined ? "" : `: ${JSON.stringify(seen)}`}`);
  }
}

function same(actual: unknown, expected: unknown, what: string): void {
  check(JSON.stringify(actual) === JSON.stringify(expected), `${what}: expected ` +
    `${JSON.stringify(expected)}`, actual);
}

function step(name: string): void {
  console.log(`ok ${name}`);
}

/** The client's typed error (ResponseError): its problem body read as the typed Problem, and
 * the answer's headers. */
async function refusalOf(call: () => Promise<unknown>,
                         status: number): Promise<{ problem: Problem; headers: Headers }> {
  try {
    await call();
  } catch (error) {
    if (!(error instanceof ResponseError)) {
      throw error;
    }
    same(error.response.status, status, "HTTP status");
    same(error.response.headers.get("content-type"), "application/problem+json", "media type");
    const problem = ProblemFromJSON(await error.response.json());
    same(problem.status, status, "problem status");
    return { problem, headers: error.response.headers };
  }
  throw new Error(`expected a ${status}, the call succeeded`);
}

async function problemOf(call: () => Promise<unknown>, status: number): Promise<Problem> {
  return (await refusalOf(call, status)).problem;
}

async function main(): Promise<void> {
  const basePath = process.env.PROXY_URL;
  check(basePath !== undefined, "PROXY_URL is not set");
  const config = new Configuration({ basePath, username: "demo", password: "demo-token" });
  const account = new AccountApi(config);
  const messages = new MessagesApi(config);
  const campaigns = new CampaignsApi(config);
  const reports = new ReportsApi(config);
  const lists = new ContactListsApi(config);
  const subscribers = new SubscribersApi(config);
  const blacklist = new BlacklistApi(config);
  const senderIds = new SenderIdsApi(config);
  const credits = (await account.getBalance()).credits;
  const balance = async (): Promise<number> => (await account.getBalance()).credits;
  step("balance");

  const sent = await messages.sendMessage({ sendMessageRequest: {
    sender: "DemoAPI", text: "Your order has shipped", allowReplies: true,
    recipients: [{ phone: "050-333-0001", externalId: "ts-order-1" },
                 { phone: "+972503330002", externalId: "ts-order-2" }],
  } });
  check(/^[0-9]+$/.test(sent.campaignId), "campaign id", sent);
  same(await balance(), credits - 2, "credits after a send to two");
  step("send to two numbers");

  const created = await lists.createContactList({ createContactListRequest: {
    name: "ts customers",
    contacts: [{ phone: "0503330003", dynamicFields: ["Dana", "Haifa"] },
               { phone: "0503330004", dynamicFields: ["Avi", "Eilat"] }],
  } });
  same([created.name, created.rejected], ["ts customers", []], "created list");
  const added = await lists.addContacts({ id: created.id, addContactsRequest: {
    contacts: [{ phone: "0503330005", dynamicFields: ["Noa", "Acre"] }],
  } });
  same(added.rejected, [], "rejected contacts");
  await lists.removeContact({ id: created.id, phone: "+972503330004" });
  const members = await lists.getContactList({ id: created.id });
  same(members.contacts.map((c) => c.phone).sort(), ["+972503330003", "+972503330005"],
    "members");
  const toList = await messages.sendMessage({ sendMessageRequest: {
    sender: "DemoAPI", text: "Hello [DYNAMIC_FIELD1]", personalize: true,
    contactListIds: [created.id],
  } });
  same(await balance(), credits - 4, "credits after a send to the list");
  step("contact list");

  const end = new Date();
  const start = new Date(end.getTime() - 3600 * 1000);
  const byId = (await reports.listDeliveryReports({
    externalId: ["ts-order-1", "ts-order-2"], from: start, to: end })).data;
  same(byId.map((r) => r.externalId).sort(), ["ts-order-1", "ts-order-2"], "reports by id");
  check(byId.every((r) => r.campaignId === sent.campaignId && STATES.has(r.state)),
    "reports of the send", byId);
  const byDate = (await reports.listDeliveryReports({ from: start, to: end })).data;
  const campaignsReported = new Set(byDate.map((r) => r.campaignId));
  check(campaignsReported.has(sent.campaignId) && campaignsReported.has(toList.campaignId),
    "reports by date", byDate);
  step("delivery reports");

  // The same window a report a page, following nextCursor to the end; Link says it too.
  const paged: typeof byDate = [];
  let cursor: string | undefined;
  do {
    const answer = await reports.listDeliveryReportsRaw({ from: start, to: end, limit: 1, cursor });
    const page = await answer.value();
    paged.push(...page.data);
    cursor = page.nextCursor;
    const link = answer.raw.headers.get("Link") ?? "";
    check(link.includes(`cursor=${cursor}`) === (cursor !== undefined), "Link", link);
  } while (cursor !== undefined);
  same(paged, byDate, "a report a page");
  check(paged.length >= 4, "reports paged", paged);
  step("pages");

  const incoming = (await reports.listIncomingMessages({ from: start, to: end })).data;
  const senders = new Set(incoming.map((m) => m.sender));
  check(senders.has("+972503330001") && senders.has("+972503330002"), "replies", incoming);
  step("incoming messages");

  const later = await messages.sendMessage({ sendMessageRequest: {
    sender: "DemoAPI", text: "Tomorrow", sendAt: new Date(Date.now() + 24 * 3600 * 1000),
    recipients: [{ phone: "0503330006" }],
  } });
  same(await balance(), credits - 5, "credits after scheduling");
  await campaigns.cancelCampaign({ campaignId: later.campaignId });
  same(await balance(), credits - 4, "credits after cancelling");
  const again = await problemOf(() => campaigns.cancelCampaign({ campaignId: later.campaignId }),
    409);
  same(again.type, "/problems/campaign-already-cancelled", "second cancel");
  step("scheduled send cancelled");

  const sub = await subscribers.createSubscriber({ createSubscriberRequest: {
    name: "Ts Subscriber", username: "tssub01", password: "s3cret-pass", sender: "DemoAPI",
    credits: 5,
  } });
  same([sub.username, sub.credits], ["tssub01", 5], "subscriber");
  const creditsOf = async (): Promise<number | undefined> =>
    (await subscribers.listSubscribers()).data.find((s) => s.name === "Ts Subscriber")?.credits;
  same(await creditsOf(), 5, "listed subscriber");
  const moved = await subscribers.transferSubscriberCredits({ username: "tssub01",
    creditTransferRequest: { password: "s3cret-pass", credits: 3 } });
  same([moved.username, moved.credits], ["tssub01", 3], "transfer");
  same(await creditsOf(), 8, "subscriber after the transfer");
  same(await balance(), credits - 12, "credits after the subscriber");
  step("subscribers");

  // The last week's blacklist: the demo account's two numbers, their dates as Dates.
  const week = (await blacklist.listBlacklist({
    from: new Date(end.getTime() - 7 * 24 * 3600 * 1000), to: end })).data;
  const listed = week.map((entry) => entry.phone);
  check(listed.includes("+972529999999") && listed.includes("+972528888888"), "blacklist");
  check(week.every((entry) => entry.addedAt instanceof Date && !isNaN(entry.addedAt.getTime())),
    "blacklist dates");
  const removal = await blacklist.removeFromBlacklist({ removeFromBlacklistRequest: {
    phones: ["0503330007"], reason: "asked by phone" } });
  same([removal.removed, removal.notFound], [0, 1], "removal");
  step("blacklist");

  const verification = await senderIds.verifySenderIds({
    verifySenderIdsRequest: { phones: ["0503330008"] } });
  check((verification.instructions ?? "").includes("0503330008"), "verification", verification);
  step("phone verification");

  const wrong = new AccountApi(new Configuration({ basePath, username: "demo",
    password: "not-the-token" }));
  const unauthorized = await problemOf(() => wrong.getBalance(), 401);
  same([unauthorized.type, unauthorized.upstreamStatus], ["/problems/invalid-credentials", 3],
    "bad credentials");
  const poor = await problemOf(() => messages.sendMessage({ sendMessageRequest: {
    sender: "DemoAPI", text: LONG_TEXT, recipients: POOR.map((phone) => ({ phone })) } }), 402);
  same(poor.type, "/problems/insufficient-credit", "not enough credit");
  const budget = Number(process.env.DAILY_CREDITS);
  const over = await refusalOf(() => messages.sendMessage({ sendMessageRequest: {
    sender: "DemoAPI", text: LONG_TEXT, recipients: MANY.map((phone) => ({ phone })) } }), 429);
  const spent = over.problem.spent ?? -1;
  same([over.problem.type, over.problem.budget, over.problem.requested,
        over.problem.violatedPolicies], ["/problems/budget-exceeded", budget, 2100,
        ["daily-credits"]], "over the daily budget");
  check(over.problem.resetsAt instanceof Date, "resets at", over.problem.resetsAt);
  const wait = Number(over.headers.get("Retry-After"));
  same(over.headers.get("RateLimit"), `"daily-credits";r=${budget - spent};t=${wait}`,
    "RateLimit");
  check((over.headers.get("RateLimit-Policy") ?? "").includes(
    `"daily-credits";q=${budget};qu="credits";w=86400`), "RateLimit-Policy",
    over.headers.get("RateLimit-Policy"));
  const daily = (await account.getLimits()).policies.find((p) => p.name === "daily-credits");
  same([daily?.quota, daily?.spent], [budget, spent], "the budget read");
  const unknown = await problemOf(() => lists.getContactList({ id: "999999999" }), 404);
  same(unknown.type, "/problems/contact-list-not-found", "unknown list");
  const direct = new MessagesApi(new Configuration({ basePath: process.env.DIRECT_URL,
    username: "demo", password: "demo-token" }));
  const invalid = await problemOf(() => direct.sendMessage({ sendMessageRequest: {
    sender: "DemoAPI", text: "hi", recipients: [{ phone: "0401234567" }] } }), 422);
  same([invalid.type, invalid.errors?.map((e) => e.pointer)],
    ["/problems/invalid-request", ["/body/recipients/0/phone"]], "invalid phone");
  same(await balance(), credits - 12, "credits after the errors");
  step("errors");
  console.log("scenario passed");
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.stack ?? error.message : error);
  process.exit(1);
});
