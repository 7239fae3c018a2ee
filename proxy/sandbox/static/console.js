// The sandbox console: a snapshot and then changes from /sandbox/api/events (server-sent
// events), drawn as phones, campaigns, accounts and the blacklist; every button is one POST
// of /sandbox/api/... (README, "The sandbox"). No framework, no inline script (the page's
// Content-Security-Policy forbids it), and text only ever set as text, never as HTML.

const ZONE = "Asia/Jerusalem"; // the upstream's time, and the sandbox's
const MAX_PHONES = 60;
const MAX_MESSAGES = 30; // per phone, the latest
const MAX_BLACKLIST = 50;
const VERBS = { failed: "Fail", expired: "Expire", delivered: "Deliver" }; // a pending delivery's buttons

const KINDS = {
  account: ["accounts", (v) => v.username],
  campaign: ["campaigns", (v) => v.id],
  incoming: ["incoming", (v) => v.id],
  blacklist: ["blacklist", (v) => `${v.account} ${v.phone}`],
  panel: ["panels", (v) => v.key],
};

const model = {
  now: null, clock: "fixed", workers: 1, pid: null, loaded: false,
  accounts: new Map(), campaigns: new Map(), incoming: new Map(), blacklist: new Map(),
  panels: new Map(),
};
const drafts = new Map(); // phone -> the reply being typed, kept across redraws
let receivedAt = Date.now(); // when model.now was last set (the system clock ticks on)

const $ = (id) => document.getElementById(id);

// ── Building the page ──────────────────────────────────────────────────────────────────

function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") element.className = value;
    else if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

const timeFormat = new Intl.DateTimeFormat("en-GB", {
  timeZone: ZONE, hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
});
const dayFormat = new Intl.DateTimeFormat("en-GB", { timeZone: ZONE, day: "numeric", month: "short" });
const dateFormat = new Intl.DateTimeFormat("en-GB", {
  timeZone: ZONE, weekday: "short", day: "numeric", month: "short", year: "numeric",
});
const numberFormat = new Intl.NumberFormat("en");

// A moment as the console writes it: the time, and the day when it is not the sandbox's today.
function when(iso) {
  const moment = new Date(iso);
  const time = timeFormat.format(moment);
  return model.now && iso.slice(0, 10) === model.now.slice(0, 10)
    ? time : `${dayFormat.format(moment)}, ${time}`;
}

function timeElement(iso, text = when(iso)) {
  return h("time", { datetime: iso }, text);
}

const idOf = (text) => text.replace(/[^A-Za-z0-9]/g, "");
const words = (name) => name.charAt(0).toUpperCase() + name.slice(1).replaceAll("_", " ");
const plural = (count, one, many = `${one}s`) => `${numberFormat.format(count)} ${count === 1 ? one : many}`;

// ── Keeping the model ──────────────────────────────────────────────────────────────────

function load(snapshot) {
  Object.assign(model, {
    now: snapshot.now, clock: snapshot.clock, workers: snapshot.workers, pid: snapshot.pid,
    loaded: true,
  });
  for (const [store, key] of Object.values(KINDS)) {
    model[store] = new Map((snapshot[store] || []).map((value) => [key(value), value]));
  }
  receivedAt = Date.now();
}

function apply(event) {
  model.now = event.now;
  receivedAt = Date.now();
  for (const change of event.changes) {
    const kind = KINDS[change.kind];
    if (!kind) continue; // a kind this page does not know yet
    const store = model[kind[0]];
    if (change.value === null) store.delete(change.key);
    else store.set(change.key, change.value);
  }
}

// Every phone that got a message or sent one, its messages oldest first.
function phones() {
  const found = new Map();
  const phone = (number) => {
    if (!found.has(number)) {
      found.set(number, { number, items: [], accounts: new Set(), ids: new Set() });
    }
    return found.get(number);
  };
  for (const campaign of model.campaigns.values()) {
    for (const delivery of campaign.deliveries) {
      const entry = phone(delivery.phone);
      entry.accounts.add(campaign.account);
      if (delivery.external_id) entry.ids.add(delivery.external_id);
      entry.items.push({ at: campaign.send_at, order: 0, id: Number(campaign.id), account: campaign.account, campaign, delivery });
    }
  }
  for (const message of model.incoming.values()) {
    const entry = phone(message.phone);
    entry.accounts.add(message.account);
    entry.items.push({ at: message.received_at, order: 1, id: Number(message.id), account: message.account, message });
  }
  const list = [...found.values()];
  for (const entry of list) {
    entry.items.sort((a, b) => Date.parse(a.at) - Date.parse(b.at) || a.order - b.order || a.id - b.id);
    entry.last = entry.items.at(-1);
  }
  return list.sort((a, b) => Date.parse(b.last.at) - Date.parse(a.last.at) || b.last.id - a.last.id);
}

function blacklistedBy(number) {
  return [...model.blacklist.values()].filter((entry) => entry.phone === number).map((entry) => entry.account);
}

// ── Acting ─────────────────────────────────────────────────────────────────────────────

async function act(call, body, done) {
  let answer;
  let problem = null;
  try {
    answer = await fetch(`/sandbox/api/${call}`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
    });
    const data = await answer.json().catch(() => null);
    if (answer.ok) {
      showProblem(null);
      announce(done(data));
      return data;
    }
    problem = data && data.title ? `${data.title}: ${data.detail}` : `The sandbox answered ${answer.status}`;
  } catch (error) {
    problem = `The sandbox cannot be reached (${error.message})`;
  }
  showProblem(problem);
  return null;
}

function showProblem(text) {
  const box = $("problem");
  box.replaceChildren(text ? h("p", {}, text) : "");
  box.classList.toggle("shown", Boolean(text));
}

function announce(text) {
  $("announce").textContent = text || "";
}

function reply(number, account, form) {
  const input = form.elements.text;
  const text = input.value;
  if (!text.trim()) {
    input.focus();
    return;
  }
  act("replies", { phone: number, text, account }, () => `${number} sent “${text}”`).then((data) => {
    if (data) {
      drafts.delete(number);
      input.value = "";
    }
  });
}

function stop(number, account) {
  act("opt-outs", { phone: number, account }, () => `${number} sent STOP and is blacklisted by ${account}`);
}

function report(campaign, delivery, outcome) {
  act("delivery-reports", { campaign_id: campaign.id, phone: delivery.phone, outcome },
    (data) => `The delivery to ${delivery.phone} is ${words(data.state).toLowerCase()}`);
}

function advance(seconds) {
  act("clock", { seconds }, (data) => `The sandbox time is now ${when(data.now)}`);
}

let resetting = null;

function askReset(username) {
  resetting = username;
  $("reset-title").textContent = `Reset ${username}?`;
  $("reset-what").textContent = `Its campaigns, reports, incoming messages, blacklist, contact lists and subscribers are removed, and its credits go back to their start.`;
  $("reset-dialog").showModal();
}

function setUpReset() {
  const dialog = $("reset-dialog");
  $("reset-cancel").addEventListener("click", () => dialog.close());
  $("reset-confirm").addEventListener("click", () => {
    dialog.close();
    const username = resetting;
    act("resets", { account: username }, () => `${username} is back to its start`);
  });
}

// ── Drawing ────────────────────────────────────────────────────────────────────────────

function drawClock() {
  if (!model.now) return;
  const shown = model.clock === "system" ? new Date(Date.parse(model.now) + Date.now() - receivedAt) : new Date(model.now);
  const now = $("now");
  now.dateTime = shown.toISOString();
  now.textContent = `${dateFormat.format(shown)}, ${timeFormat.format(shown)}`;
  $("clock-mode").textContent = model.clock === "fixed" ? "fixed clock" : "system clock";
  $("advance").hidden = model.clock !== "fixed";
}

function drawWorkers() {
  const banner = $("workers");
  banner.hidden = model.workers <= 1;
  banner.textContent = model.workers <= 1 ? "" :
    `This proxy runs ${model.workers} worker processes, each with a sandbox of its own: this page shows the one of process ${model.pid}, and an API call may reach another. Run one worker (--workers 1) to see every call here.`;
}

function drawAccounts() {
  const items = [...model.accounts.values()].sort((a, b) => a.username.localeCompare(b.username));
  $("accounts").replaceChildren(...items.map((account) => h("li", { class: "account" },
    h("p", { class: "who" }, h("strong", {}, account.username), account.name ? ` ${account.name}` : ""),
    h("p", { class: "credits" }, h("span", { class: "amount" }, numberFormat.format(account.credits)), " credits"),
    account.sender ? h("p", { class: "muted" }, `Sender id ${account.sender}`) : null,
    account.parent
      ? h("p", { class: "muted" }, `Subscriber of ${account.parent}`)
      : h("button", { type: "button", class: "quiet", "data-key": `reset ${account.username}`, onclick: () => askReset(account.username) }, `Reset ${account.username}…`),
  )));
}

function drawBlacklist() {
  const entries = [...model.blacklist.values()].sort((a, b) => Date.parse(b.added_at) - Date.parse(a.added_at));
  const several = model.accounts.size > 1;
  $("blacklist").replaceChildren(...(entries.length ? entries.slice(0, MAX_BLACKLIST).map((entry) => h("li", {},
    h("span", { class: "number" }, entry.phone),
    several ? h("span", { class: "muted" }, ` ${entry.account}`) : null, timeElement(entry.added_at),
  )) : [h("li", { class: "empty" }, "Nobody has opted out.")]),
  entries.length > MAX_BLACKLIST ? h("li", { class: "muted" }, `and ${plural(entries.length - MAX_BLACKLIST, "older entry", "older entries")}`) : "");
}

function campaignSummary(campaign) {
  const counts = new Map();
  for (const delivery of campaign.deliveries) counts.set(delivery.state, (counts.get(delivery.state) || 0) + 1);
  return [...counts].map(([state, count]) => `${count} ${state.replaceAll("_", " ")}`).join(", ");
}

function drawCampaigns() {
  const campaigns = [...model.campaigns.values()].sort((a, b) => Number(b.id) - Number(a.id));
  const several = model.accounts.size > 1;
  if (!campaigns.length) {
    $("campaigns").replaceChildren(h("li", { class: "empty" }, "No campaigns yet: send a message through the API and it appears here."));
    return;
  }
  $("campaigns").replaceChildren(...campaigns.map((campaign) => h("li", { class: "campaign" },
    h("div", { class: "campaign-head" },
      h("h3", {}, `Campaign ${campaign.id}`),
      h("span", { class: `badge state-${campaign.state}` }, words(campaign.state))),
    h("p", { class: "text", dir: "auto" }, campaign.text),
    campaign.texts > 1 ? h("p", { class: "muted" }, `and ${plural(campaign.texts - 1, "other text")} (personalised or bulk)`) : null,
    h("dl", { class: "facts" },
      fact("From", campaign.senders.join(", ") || "—"),
      fact("Recipients", numberFormat.format(campaign.recipients)),
      fact("Parts", campaign.parts),
      fact("Credits", numberFormat.format(campaign.credits)),
      fact({ scheduled: "Goes out", cancelled: "Was due" }[campaign.state] || "Sent", timeElement(campaign.send_at)),
      several ? fact("Account", campaign.account) : null),
    h("p", { class: "muted" }, [
      campaign.state === "cancelled" ? "Cancelled before it went out; the credits were given back." : `${campaignSummary(campaign)}.`,
      campaign.reply_to ? ` Replies go to ${campaign.reply_to}.` : "",
      campaign.unsubscribe ? ` Opt-out by ${campaign.unsubscribe}.` : "",
      campaign.more_recipients ? ` ${plural(campaign.more_recipients, "more recipient")} not shown.` : "",
    ].join("")),
  )));
}

function fact(term, value) {
  return h("div", {}, h("dt", {}, term), h("dd", {}, value));
}

function deliveryStatus(item) {
  const { campaign, delivery } = item;
  const status = h("p", { class: `status state-${delivery.state}` });
  if (delivery.state === "scheduled") status.append(`Scheduled for ${when(campaign.send_at)}: not on the phone yet`);
  else if (delivery.state === "cancelled") status.append("Cancelled: never sent");
  else if (delivery.state === "pending") status.append("Sent, no report yet");
  else {
    // The report's own words (its English text), the API's state name on hover.
    const said = delivery.state === "delivered" ? "Delivered" : delivery.description || words(delivery.state);
    status.title = `state ${delivery.state}, status_code ${delivery.status_code}`;
    status.append(h("strong", {}, said), " ", timeElement(delivery.reported_at));
    if (delivery.state !== "delivered") status.append(` · status ${delivery.status_code}`);
  }
  return status;
}

function receivedBubble(entry, item) {
  const { campaign, delivery } = item;
  const pending = delivery.state === "pending";
  return h("li", { class: `bubble to-phone${["scheduled", "cancelled"].includes(delivery.state) ? " not-sent" : ""}` },
    h("p", { class: "meta" }, h("span", { class: "sender" }, delivery.sender || "—"), " ", timeElement(campaign.send_at)),
    h("p", { class: "text", dir: "auto" }, delivery.text),
    deliveryStatus(item),
    pending ? h("div", { class: "actions", role: "group", "aria-label": `Report for the delivery to ${entry.number}` },
      ["failed", "expired", "delivered"].map((outcome) => h("button", {
        type: "button", class: "quiet small", "data-key": `report ${campaign.id} ${entry.number} ${outcome}`,
        "aria-label": `${VERBS[outcome]} the delivery of campaign ${campaign.id} to ${entry.number}`,
        onclick: () => report(campaign, delivery, outcome),
      }, VERBS[outcome]))) : null,
  );
}

function sentBubble(item) {
  const { message } = item;
  return h("li", { class: "bubble from-phone" },
    h("p", { class: "text", dir: "auto" }, message.text),
    h("p", { class: "meta" }, timeElement(message.received_at), ` · to ${message.to}`));
}

function phoneCard(entry) {
  const id = idOf(entry.number);
  const account = entry.last.account;
  const optedOut = blacklistedBy(entry.number);
  const shown = entry.items.slice(-MAX_MESSAGES);
  const earlier = entry.items.length - shown.length;
  const input = h("input", {
    id: `reply-${id}`, name: "text", type: "text", autocomplete: "off", dir: "auto", maxlength: 1005,
    placeholder: "Reply…", "data-key": `reply ${entry.number}`,
    oninput: (event) => drafts.set(entry.number, event.target.value),
  });
  input.value = drafts.get(entry.number) || "";
  const form = h("form", { class: "reply", onsubmit: (event) => { event.preventDefault(); reply(entry.number, account, event.target); } },
    h("label", { for: `reply-${id}`, class: "visually-hidden" }, `Reply from ${entry.number}`),
    input,
    h("button", { type: "submit", class: "primary", "data-key": `send ${entry.number}`, "aria-label": `Send the reply from ${entry.number}` }, "Send"),
    h("button", { type: "button", class: "quiet", "data-key": `stop ${entry.number}`, "aria-label": `Send STOP from ${entry.number}`, onclick: () => stop(entry.number, account) }, "STOP"));
  return h("article", { class: "phone", "aria-labelledby": `phone-${id}` },
    h("header", { class: "phone-head" },
      h("h3", { id: `phone-${id}` }, entry.number),
      h("p", { class: "tags" },
        [...entry.ids].map((externalId) => h("span", { class: "tag" }, externalId)),
        optedOut.length ? h("span", { class: "badge state-opted_out" }, model.accounts.size > 1 ? `Opted out of ${optedOut.join(", ")}` : "Opted out") : null)),
    earlier ? h("p", { class: "muted earlier" }, `${plural(earlier, "earlier message")} not shown`) : null,
    h("ol", { class: "thread", "aria-label": `Messages of ${entry.number}` },
      shown.map((item) => (item.delivery ? receivedBubble(entry, item) : sentBubble(item)))),
    form);
}

function drawPhones() {
  const list = phones();
  const cards = list.slice(0, MAX_PHONES).map(phoneCard);
  if (!cards.length) cards.push(h("p", { class: "empty" }, "No phones yet: the recipients of a send, and the phones that write to an account, appear here."));
  if (list.length > MAX_PHONES) cards.push(h("p", { class: "muted" }, `${plural(list.length - MAX_PHONES, "more phone")} not shown.`));
  $("phone-list").replaceChildren(...cards);
}

function drawPanels() {
  $("panels").replaceChildren(...[...model.panels.values()].map((panel) => h("section", { class: "extra", "aria-labelledby": `panel-${idOf(panel.key)}` },
    h("h2", { id: `panel-${idOf(panel.key)}` }, panel.title),
    panel.rows.length ? h("table", {},
      h("thead", {}, h("tr", {}, panel.columns.map((column) => h("th", { scope: "col" }, words(column))))),
      h("tbody", {}, panel.rows.map((row) => h("tr", {}, panel.columns.map((column) => h("td", { dir: "auto" }, row[column] ?? "")))))) :
      h("p", { class: "empty" }, "Nothing yet."))));
}

// Redraws everything; what had the focus (by its data-key) keeps it, with its selection.
function draw() {
  const active = document.activeElement;
  const key = active && active.dataset ? active.dataset.key : undefined;
  const selection = active && typeof active.selectionStart === "number" ? [active.selectionStart, active.selectionEnd] : null;
  drawClock();
  drawWorkers();
  drawAccounts();
  drawBlacklist();
  drawCampaigns();
  drawPhones();
  drawPanels();
  if (key && !document.body.contains(active)) {
    const again = [...document.querySelectorAll("[data-key]")].find((element) => element.dataset.key === key);
    if (again) {
      again.focus();
      if (selection) again.setSelectionRange(...selection);
    }
  }
}

// ── Live ───────────────────────────────────────────────────────────────────────────────

function setConnection(state, text) {
  const connection = $("connection");
  if (connection.dataset.state === state) return;
  connection.dataset.state = state;
  connection.textContent = text;
}

function connect() {
  const source = new EventSource("/sandbox/api/events");
  source.addEventListener("snapshot", (event) => {
    load(JSON.parse(event.data));
    setConnection("live", "Live");
    draw();
  });
  source.addEventListener("change", (event) => {
    apply(JSON.parse(event.data));
    draw();
  });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) setConnection("closed", "Disconnected: reload the page");
    else setConnection("reconnecting", "Reconnecting…");
  });
}

document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("#advance button")) {
    button.addEventListener("click", () => advance(Number(button.dataset.seconds)));
  }
  setUpReset();
  setInterval(() => { if (model.clock === "system") drawClock(); }, 1000);
  connect();
});
