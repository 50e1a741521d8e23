// The pages' two languages (zh-CN and en): their texts, the names of the domain's codes
// (from /static/vocabulary.json, made from aggregates/vocabulary.py) and dates, numbers
// and durations through Intl, in the desk's time zone. Loaded before a page's own script;
// defines window.I18N. Each page adds its own texts with I18N.add({key: [en, zh], ...}).
"use strict";

(() => {
  const LANGS = ["zh-CN", "en"];
  const STORED = "complaints.lang";
  const texts = {};
  let labels = {};

  function chosen() {
    const asked = new URLSearchParams(location.search).get("lang");
    if (LANGS.includes(asked)) return asked;
    const stored = localStorage.getItem(STORED);
    if (LANGS.includes(stored)) return stored;
    const browser = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || ""];
    return browser.some((lang) => /^zh\b/i.test(lang)) ? "zh-CN" : "en";
  }

  const index = () => (I18N.lang === "zh-CN" ? 1 : 0);
  const fill = (text, vars) => (vars ? text.replace(/\{(\w+)\}/g, (all, name) => (name in vars ? String(vars[name]) : all)) : text);
  const none = "–";

  // Intl formatters, remade when the language or the time zone changes.
  let formats = null;
  function formatters() {
    if (formats && formats.lang === I18N.lang && formats.zone === I18N.timeZone) return formats;
    const zone = I18N.timeZone;
    formats = {
      lang: I18N.lang, zone,
      dateTime: new Intl.DateTimeFormat(I18N.lang, { timeZone: zone, year: "numeric", month: "short", day: "numeric",
        hour: "2-digit", minute: "2-digit", hourCycle: "h23" }),
      date: new Intl.DateTimeFormat(I18N.lang, { timeZone: zone, year: "numeric", month: "short", day: "numeric" }),
      number: new Intl.NumberFormat(I18N.lang, { maximumFractionDigits: 2 }),
      percent: new Intl.NumberFormat(I18N.lang, { style: "percent", minimumFractionDigits: 1, maximumFractionDigits: 1 }),
    };
    return formats;
  }

  // A date without a time ("2026-12-03") is a calendar day: shown as that day, whatever the zone.
  const isDay = (iso) => /^\d{4}-\d{2}-\d{2}$/.test(String(iso));

  const I18N = {
    lang: chosen(),
    timeZone: "Asia/Shanghai",

    setLang(lang) {
      if (!LANGS.includes(lang)) return;
      I18N.lang = lang;
      localStorage.setItem(STORED, lang);
      document.documentElement.lang = lang;
      for (const select of document.querySelectorAll("select.lang-switcher")) select.value = lang;
      window.dispatchEvent(new Event("languagechange"));
    },

    add(catalog) { Object.assign(texts, catalog); },

    t(key, vars) {
      const pair = texts[key];
      return pair ? fill(pair[index()], vars) : key;
    },

    label(kind, code) {
      if (code === null || code === undefined || code === "") return none;
      const pair = (labels[kind] || {})[code];
      return pair ? pair[index()] : String(code);
    },

    // The codes of a kind the vocabulary names (a form's options), in its order.
    codes(kind) { return Object.keys(labels[kind] || {}); },

    dateTime(iso) { return iso ? formatters().dateTime.format(new Date(iso)) : none; },

    date(iso) {
      if (!iso) return none;
      if (isDay(iso)) {
        return new Intl.DateTimeFormat(I18N.lang, { timeZone: "UTC", year: "numeric", month: "short", day: "numeric" })
          .format(new Date(`${iso}T00:00:00Z`));
      }
      return formatters().date.format(new Date(iso));
    },

    number(n) { return n === null || n === undefined || Number.isNaN(Number(n)) ? none : formatters().number.format(n); },

    percent(fraction) { return fraction === null || fraction === undefined ? none : formatters().percent.format(fraction); },

    // Seconds as the largest sensible unit: minutes under an hour, hours under two days, else days.
    duration(seconds) {
      if (seconds === null || seconds === undefined) return none;
      const a = Math.abs(seconds);
      const [value, unit, digits] = a < 3600 ? [a / 60, "minute", 0] : a < 172800 ? [a / 3600, "hour", 1] : [a / 86400, "day", 1];
      return new Intl.NumberFormat(I18N.lang, { style: "unit", unit, unitDisplay: "short", maximumFractionDigits: digits })
        .format(value);
    },

    switcher() {
      const select = document.createElement("select");
      select.className = "lang-switcher";
      select.setAttribute("aria-label", "Language / 语言");
      for (const [value, name] of [["zh-CN", "中文"], ["en", "English"]]) {
        const option = document.createElement("option");
        option.value = value;
        option.textContent = name;
        select.append(option);
      }
      select.value = I18N.lang;
      select.addEventListener("change", () => I18N.setLang(select.value));
      return select;
    },
  };

  I18N.ready = fetch("/static/vocabulary.json", { headers: { accept: "application/json" } })
    .then((response) => (response.ok ? response.json() : Promise.reject(new Error(`vocabulary: ${response.status}`))))
    .then((vocabulary) => {
      labels = vocabulary.labels;
      I18N.timeZone = vocabulary.time_zone;
    });

  document.documentElement.lang = I18N.lang;
  window.I18N = I18N;
})();
