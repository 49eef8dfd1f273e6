//! End-to-end tests: the real `netserver-host` on port 0, real sockets.

mod pki;
mod util;

mod access;
mod balancer;
mod budgets;
mod check;
mod conf;
mod conformance;
mod daemon;
mod echo;
mod fairness;
mod faults;
mod hardening;
mod http;
mod languages;
mod logging;
mod metrics;
mod modules;
mod mux;
mod operations;
mod personalities;
mod privileges;
mod protocols;
mod reload;
mod sandbox;
mod server_hooks;
mod signals;
mod snapshots;
mod tenancy;
mod tls;
mod transport;
