//! The report: the usage ledger priced. What this installation did over a window of days,
//! what the same work would have cost on hosted APIs (a cost table the user can edit), the
//! electricity it took, and the seed's frameworks on those figures: the Sovereign Stack
//! Crossover Point (SSCP), the Zero-Marginal-Cost Inference Threshold (ZMCIT) and the
//! Personal Compute Sovereignty score (PCS).
//!
//! Nothing is invented: a figure without data is `null` (shown as unknown), and what rests
//! on it is not computed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::usage::{self, Counts};

/// The cost table built in (`server/costs.toml`).
pub const BUILT_IN_COSTS: &str = include_str!("../costs.toml");

/// Where `eval --qa` keeps its latest figures, per bench, in the data dir.
const EVALS_FILE: &str = "evals.json";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Costs {
    compare: Compare,
    #[serde(default)]
    prices: Vec<Price>,
    #[serde(default)]
    electricity: Electricity,
    #[serde(default)]
    hardware: Hardware,
    #[serde(default)]
    frontier: Frontier,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Compare {
    chat: String,
    embedding: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Price {
    name: String,
    kind: String,
    input_per_million: f64,
    #[serde(default)]
    output_per_million: Option<f64>,
    source: String,
    date: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Electricity {
    watts_per_core: Option<f64>,
    watts_source: Option<String>,
    price_per_kwh: Option<f64>,
    price_source: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Hardware {
    cost: Option<f64>,
    lifetime_months: Option<f64>,
    payback_target_months: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Frontier {
    bench: Option<String>,
    f1: Option<f64>,
    source: Option<String>,
}

impl Costs {
    /// The table in `file`, or the built-in one; checked so that a typo is an error now,
    /// not a silent unknown later.
    pub fn load(file: Option<&Path>) -> Result<(Self, String)> {
        let (text, from) = match file {
            Some(p) => (
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
                p.display().to_string(),
            ),
            None => (BUILT_IN_COSTS.to_owned(), "built in".to_owned()),
        };
        let costs: Costs =
            toml::from_str(&text).with_context(|| format!("in the cost table ({from})"))?;
        for (want, kind) in [
            (&costs.compare.chat, "chat"),
            (&costs.compare.embedding, "embedding"),
        ] {
            let p = costs.price(want).with_context(|| {
                format!(
                    "the cost table ({from}) compares with `{want}`, which has no [[prices]] entry"
                )
            })?;
            anyhow::ensure!(
                p.kind == kind,
                "the cost table ({from}): `{want}` is a {} model, compared as {kind}",
                p.kind
            );
            anyhow::ensure!(
                kind == "embedding" || p.output_per_million.is_some(),
                "the cost table ({from}): `{want}` needs output_per_million"
            );
        }
        Ok((costs, from))
    }

    fn price(&self, name: &str) -> Option<&Price> {
        self.prices.iter().find(|p| p.name == name)
    }
}

/// An `eval --qa` result kept for the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalResult {
    /// The bench folder's name (`squad2`).
    pub bench: String,
    pub questions: usize,
    pub f1: f64,
    pub exact: f64,
    pub model: String,
    pub day: String,
}

/// Keeps `r` as the latest result for its bench.
pub fn save_eval(data_dir: &Path, r: &EvalResult) -> Result<()> {
    let mut all = load_evals(data_dir);
    all.insert(r.bench.clone(), r.clone());
    std::fs::create_dir_all(data_dir)?;
    crate::files::write_json(&data_dir.join(EVALS_FILE), &all)
}

fn load_evals(data_dir: &Path) -> BTreeMap<String, EvalResult> {
    std::fs::read(data_dir.join(EVALS_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Dollars the `counts` would have cost on the compared hosted models.
fn api_cost(c: &Counts, chat: &Price, emb: &Price) -> (f64, f64, f64) {
    let m = 1e6;
    (
        c.embedded_tokens as f64 * emb.input_per_million / m,
        c.prompt_tokens as f64 * chat.input_per_million / m,
        c.generated_tokens as f64 * chat.output_per_million.unwrap_or(0.0) / m,
    )
}

/// kWh and dollars for `cpu_seconds` of busy cores, when the table has both figures.
fn electricity(cpu_seconds: f64, e: &Electricity) -> (Option<f64>, Option<f64>) {
    let kwh = e.watts_per_core.map(|w| cpu_seconds * w / 3.6e6);
    let usd = kwh.zip(e.price_per_kwh).map(|(k, p)| k * p);
    (kwh, usd)
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

/// The report over the `days` days up to today, as JSON (the shape of `GET /v1/report`).
pub fn build(data_dir: &Path, costs_file: Option<&PathBuf>, days: u32) -> Result<Value> {
    anyhow::ensure!(
        (1..=3660).contains(&days),
        "--days must be between 1 and 3660"
    );
    let (costs, costs_from) = Costs::load(costs_file.map(PathBuf::as_path))?;
    let (records, unreadable) = usage::read(data_dir)?;
    let per_day = usage::by_day(&records);
    let today = chrono::Local::now().date_naive();
    let first = today - chrono::Days::new(u64::from(days) - 1);
    let first_s = first.format("%Y-%m-%d").to_string();
    let chat = costs.price(&costs.compare.chat).expect("checked on load");
    let emb = costs
        .price(&costs.compare.embedding)
        .expect("checked on load");

    let mut window = Counts::default();
    let mut day_rows = Vec::new();
    for (day, c) in per_day.range(first_s.clone()..) {
        window.add(c);
        let (e, i, o) = api_cost(c, chat, emb);
        let (_, power) = electricity(c.cpu_seconds, &costs.electricity);
        day_rows.push(json!({
            "day": day,
            "tokens": c.embedded_tokens + c.prompt_tokens + c.generated_tokens,
            "embedded_tokens": c.embedded_tokens,
            "prompt_tokens": c.prompt_tokens,
            "generated_tokens": c.generated_tokens,
            "answers": c.answers,
            "searches": c.searches,
            "cpu_seconds": round(c.cpu_seconds, 1),
            "cost_avoided_usd": round(e + i + o, 6),
            "electricity_usd": power.map(|p| round(p, 6)),
        }));
    }
    // The window's days actually covered: from the first day with a record, if later.
    let first_recorded = per_day
        .keys()
        .next()
        .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
    let covered_days = first_recorded
        .map(|f| (today - f.max(first)).num_days() + 1)
        .unwrap_or(0)
        .max(0) as f64;

    let (emb_usd, in_usd, out_usd) = api_cost(&window, chat, emb);
    let avoided = emb_usd + in_usd + out_usd;
    let (kwh, power_usd) = electricity(window.cpu_seconds, &costs.electricity);
    let net = power_usd.map(|p| avoided - p);
    let tokens = window.embedded_tokens + window.prompt_tokens + window.generated_tokens;

    // All time, for ZMCIT.
    let mut all = Counts::default();
    for c in per_day.values() {
        all.add(c);
    }
    let (ae, ai, ao) = api_cost(&all, chat, emb);
    let all_net = electricity(all.cpu_seconds, &costs.electricity)
        .1
        .map(|p| ae + ai + ao - p);

    let hw = &costs.hardware;
    let net_per_day = net.filter(|_| covered_days > 0.0).map(|n| n / covered_days);
    let payback_days = hw
        .cost
        .zip(net_per_day)
        .and_then(|(cost, per_day)| (per_day > 0.0).then(|| cost / per_day));
    let target_days = hw.payback_target_months.map(|m| m * 30.44);
    let net_per_token = net.filter(|_| tokens > 0).map(|n| n / tokens as f64);
    let crossover = hw
        .cost
        .zip(target_days)
        .zip(net_per_token)
        .and_then(|((cost, days), per_token)| (per_token > 0.0).then(|| cost / days / per_token));
    let tokens_per_day = (covered_days > 0.0).then(|| tokens as f64 / covered_days);
    let zmcit_past = hw.cost.zip(all_net).map(|(cost, n)| n >= cost);

    // PCS: each factor with where it came from, and the score only when all are known.
    let evals = load_evals(data_dir);
    let eval = costs.frontier.bench.as_ref().and_then(|b| evals.get(b));
    let perf = eval
        .zip(costs.frontier.f1)
        .map(|(e, f)| (e.f1 / f).min(1.0));
    let perf_from = match (eval, costs.frontier.f1, &costs.frontier.bench) {
        (Some(e), Some(f), _) => format!(
            "`sovrag eval --qa` on {} ({} questions, {}, {}): F1 {:.1} / frontier F1 {f:.1} ({})",
            e.bench,
            e.questions,
            e.model,
            e.day,
            e.f1,
            costs
                .frontier
                .source
                .as_deref()
                .unwrap_or("source not given")
        ),
        (None, _, Some(b)) => {
            format!("unknown: no `sovrag eval --qa` result on `{b}` in this data dir")
        }
        (_, None, _) | (_, _, None) => {
            "unknown: no frontier figure in the cost table ([frontier] bench and f1)".into()
        }
    };
    let privacy = if window.egress_violations > 0 {
        Some(0.0)
    } else if window.egress_checks > 0 {
        Some(1.0)
    } else {
        None
    };
    let privacy_from = if window.egress_violations > 0 {
        format!(
            "the no-egress check found a socket that could leave the machine {} of {} times",
            window.egress_violations, window.egress_checks
        )
    } else if window.egress_checks > 0 {
        format!(
            "the no-egress check passed all {} times it ran in this window (the process's own sockets, read from /proc, each time usage was recorded)",
            window.egress_checks
        )
    } else {
        "unknown: no no-egress check ran in this window (it needs Linux's /proc)".into()
    };
    let hw_window = hw
        .cost
        .zip(hw.lifetime_months)
        .map(|(c, m)| c * covered_days / (m * 30.44));
    let local_cost = power_usd.map(|p| p + hw_window.unwrap_or(0.0));
    let savings = local_cost
        .filter(|_| avoided > 0.0)
        .map(|l| ((avoided - l) / avoided).clamp(0.0, 1.0));
    let savings_from = match (savings, power_usd) {
        (Some(_), _) => format!(
            "(hosted cost {avoided:.4} - local cost {:.4}) / hosted cost, over the window; local cost is electricity{}",
            local_cost.unwrap_or(0.0),
            if hw_window.is_some() {
                " and the hardware's cost spread over its lifetime"
            } else {
                " only ([hardware] cost and lifetime_months not set)"
            }
        ),
        (None, None) => "unknown: the cost table has no electricity figures".into(),
        (None, Some(_)) => "unknown: no usage in this window".into(),
    };
    let score = match (perf, privacy, savings) {
        (Some(a), Some(b), Some(c)) => Some(round(a * b * c * 100.0, 1)),
        _ => None,
    };

    // Sums of many short intervals carry float noise (2395.609999999999).
    window.cpu_seconds = round(window.cpu_seconds, 2);
    Ok(json!({
        "window": {"days": days, "from": first_s, "to": today.format("%Y-%m-%d").to_string(), "days_with_data": covered_days},
        "totals": window,
        "days": day_rows,
        "costs": {
            "table": costs_from,
            "chat": chat,
            "embedding": emb,
            // sovrag has one embedding model; the generators are named in `totals`.
            "local_embedding_model": "all-MiniLM-L6-v2 (int8 ONNX)",
            "note": "token counts are sovrag's own models' tokens",
        },
        "cost_avoided_usd": {
            "embedding": round(emb_usd, 6),
            "chat_input": round(in_usd, 6),
            "chat_output": round(out_usd, 6),
            "total": round(avoided, 6),
        },
        "electricity": {
            "kwh": kwh.map(|k| round(k, 6)),
            "usd": power_usd.map(|p| round(p, 6)),
            "watts_per_core": costs.electricity.watts_per_core,
            "watts_source": costs.electricity.watts_source,
            "price_per_kwh": costs.electricity.price_per_kwh,
            "price_source": costs.electricity.price_source,
        },
        "net_savings_usd": net.map(|n| round(n, 6)),
        "hardware": {
            "cost_usd": hw.cost,
            "lifetime_months": hw.lifetime_months,
            "payback_days": payback_days.map(|d| round(d, 1)),
        },
        "sscp": {
            "crossover_tokens_per_day": crossover.map(|c| c.round()),
            "payback_target_months": hw.payback_target_months,
            "tokens_per_day": tokens_per_day.map(|t| t.round()),
            "past": crossover.zip(tokens_per_day).map(|(c, t)| t >= c),
        },
        "zmcit": {
            "past": zmcit_past,
            "all_time_net_savings_usd": all_net.map(|n| round(n, 6)),
            "hardware_cost_usd": hw.cost,
            "meaning": "past when all-time savings have paid for the hardware: every further token costs only its electricity",
        },
        "pcs": {
            "score": score,
            "factors": {
                "local_performance": {"value": perf.map(|p| round(p, 3)), "from": perf_from},
                "privacy": {"value": privacy, "from": privacy_from},
                "cost_savings": {"value": savings.map(|s| round(s, 3)), "from": savings_from},
            },
        },
        "unreadable_ledger_lines": unreadable,
    }))
}

/// The report for a person.
pub fn render(r: &Value) -> String {
    let mut out = String::new();
    let w = &r["window"];
    let t = &r["totals"];
    let num = |v: &Value| v.as_f64().unwrap_or(0.0);
    let known =
        |v: &Value, f: &dyn Fn(f64) -> String| v.as_f64().map_or_else(|| "unknown".to_owned(), f);
    out += &format!(
        "sovrag usage, {} to {} ({} days with data)\n",
        w["from"].as_str().unwrap_or(""),
        w["to"].as_str().unwrap_or(""),
        num(&w["days_with_data"])
    );
    out += &format!(
        "  tokens embedded {}, prompt {}, generated {}; {} answers, {} searches; CPU {:.0} s\n",
        num(&t["embedded_tokens"]),
        num(&t["prompt_tokens"]),
        num(&t["generated_tokens"]),
        num(&t["answers"]),
        num(&t["searches"]),
        num(&t["cpu_seconds"])
    );
    if let Some(g) = t["generators"].as_object() {
        for (m, c) in g {
            out += &format!(
                "    {m}: {} answers, {} prompt + {} generated tokens\n",
                num(&c["answers"]),
                num(&c["prompt_tokens"]),
                num(&c["generated_tokens"])
            );
        }
    }
    for d in r["days"].as_array().into_iter().flatten() {
        out += &format!(
            "    {}  {:>10} tokens  ${:.4} avoided\n",
            d["day"].as_str().unwrap_or(""),
            num(&d["tokens"]),
            num(&d["cost_avoided_usd"])
        );
    }
    let c = &r["costs"];
    let a = &r["cost_avoided_usd"];
    out += &format!(
        "hosted equivalent: ${:.4} (embedding ${:.4} at {} ${}/M, {}; chat ${:.4} + ${:.4} at {} ${}/M in, ${}/M out, {}) — table: {}\n",
        num(&a["total"]),
        num(&a["embedding"]),
        c["embedding"]["name"].as_str().unwrap_or(""),
        num(&c["embedding"]["input_per_million"]),
        c["embedding"]["date"].as_str().unwrap_or(""),
        num(&a["chat_input"]),
        num(&a["chat_output"]),
        c["chat"]["name"].as_str().unwrap_or(""),
        num(&c["chat"]["input_per_million"]),
        num(&c["chat"]["output_per_million"]),
        c["chat"]["date"].as_str().unwrap_or(""),
        c["table"].as_str().unwrap_or("")
    );
    let e = &r["electricity"];
    out += &format!(
        "electricity: {} ({} kWh at {} W/core, ${}/kWh: {})\n",
        known(&e["usd"], &|v| format!("${v:.4}")),
        known(&e["kwh"], &|v| format!("{v:.4}")),
        known(&e["watts_per_core"], &|v| format!("{v}")),
        known(&e["price_per_kwh"], &|v| format!("{v}")),
        e["price_source"].as_str().unwrap_or("no source")
    );
    out += &format!(
        "net savings: {}\n",
        known(&r["net_savings_usd"], &|v| format!("${v:.4}"))
    );
    let h = &r["hardware"];
    out += &format!(
        "hardware: {}; payback {}\n",
        known(&h["cost_usd"], &|v| format!("${v:.0}")),
        known(&h["payback_days"], &|v| format!(
            "{v:.0} days at this window's rate"
        ))
    );
    let s = &r["sscp"];
    out += &format!(
        "SSCP crossover: {} tokens/day (payback in {} months); this installation: {} tokens/day\n",
        known(&s["crossover_tokens_per_day"], &|v| format!("{v:.0}")),
        known(&s["payback_target_months"], &|v| format!("{v}")),
        known(&s["tokens_per_day"], &|v| format!("{v:.0}"))
    );
    out += &format!(
        "ZMCIT: {}\n",
        match r["zmcit"]["past"].as_bool() {
            Some(true) => "past (the hardware is paid for: further tokens cost only electricity)",
            Some(false) => "not yet past",
            None => "unknown (set [hardware] cost in the cost table)",
        }
    );
    let p = &r["pcs"];
    out += &format!("PCS: {}\n", known(&p["score"], &|v| format!("{v:.1}")));
    for f in ["local_performance", "privacy", "cost_savings"] {
        let x = &p["factors"][f];
        out += &format!(
            "  {f}: {} — {}\n",
            known(&x["value"], &|v| format!("{v:.3}")),
            x["from"].as_str().unwrap_or("")
        );
    }
    if num(&r["unreadable_ledger_lines"]) > 0.0 {
        out += &format!(
            "({} ledger lines could not be read: cut short by a crash)\n",
            num(&r["unreadable_ledger_lines"])
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_table_loads_and_a_typo_is_an_error() {
        Costs::load(None).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            BUILT_IN_COSTS.replace(
                "chat = \"openai/gpt-4o-mini\"",
                "chat = \"openai/gpt-4o-mni\"",
            ),
        )
        .unwrap();
        let e = Costs::load(Some(&f)).unwrap_err();
        assert!(format!("{e:#}").contains("gpt-4o-mni"), "{e:#}");
    }

    #[test]
    fn an_empty_ledger_reports_unknowns_not_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let r = build(dir.path(), None, 30).unwrap();
        assert_eq!(r["pcs"]["score"], Value::Null);
        assert_eq!(r["pcs"]["factors"]["privacy"]["value"], Value::Null);
        assert_eq!(r["sscp"]["crossover_tokens_per_day"], Value::Null);
        assert_eq!(r["zmcit"]["past"], Value::Null);
    }

    #[test]
    fn prices_the_ledger_and_computes_pcs_when_every_factor_is_known() {
        let dir = tempfile::tempdir().unwrap();
        let line = |counts: Counts| {
            serde_json::to_string(&usage::Record {
                day: usage::today(),
                ts: 1,
                counts,
            })
            .unwrap()
        };
        let c = Counts {
            embedded_tokens: 1_000_000,
            prompt_tokens: 2_000_000,
            generated_tokens: 100_000,
            cpu_seconds: 3600.0,
            egress_checks: 3,
            ..Counts::default()
        };
        std::fs::write(dir.path().join(usage::FILE), line(c) + "\n").unwrap();
        save_eval(
            dir.path(),
            &EvalResult {
                bench: "squad2".into(),
                questions: 400,
                f1: 60.0,
                exact: 55.0,
                model: "m".into(),
                day: usage::today(),
            },
        )
        .unwrap();
        let costs = dir.path().join("costs.toml");
        std::fs::write(
            &costs,
            BUILT_IN_COSTS
                .replace("# bench = \"squad2\"", "bench = \"squad2\"")
                .replace("# f1 = 85.0", "f1 = 80.0")
                .replace("# cost = 1500.0", "cost = 1000.0"),
        )
        .unwrap();
        let r = build(dir.path(), Some(&costs), 7).unwrap();
        // 1M embedded at $0.02, 2M in at $0.15, 0.1M out at $0.60.
        assert!((r["cost_avoided_usd"]["total"].as_f64().unwrap() - 0.38).abs() < 1e-9);
        // One busy core-hour at 8 W and $0.165/kWh.
        assert!((r["electricity"]["usd"].as_f64().unwrap() - 0.00132).abs() < 1e-9);
        assert_eq!(r["pcs"]["factors"]["local_performance"]["value"], 0.75);
        assert_eq!(r["pcs"]["factors"]["privacy"]["value"], 1.0);
        let pcs = r["pcs"]["score"].as_f64().unwrap();
        assert!(pcs > 74.0 && pcs <= 75.0, "{pcs}");
        assert_eq!(r["zmcit"]["past"], false);
        assert!(r["sscp"]["crossover_tokens_per_day"].as_f64().unwrap() > 1e6);
    }
}
