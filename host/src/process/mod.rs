//! The process model: Net::Server's personalities.
//!
//! The master process reads the configuration, compiles every handler and
//! binds every socket before any thread exists, then becomes a supervisor
//! that only forks, reaps and acts on signals ([`master`]); each worker
//! builds its own runtime after the fork ([`worker`]).
//!
//! | `server_type` | processes |
//! | --- | --- |
//! | `multiplex` | `workers` worker processes, each serving many connections at once |
//! | `single` | one worker, one connection at a time |
//! | `prefork-simple` | `max_servers` workers, one connection at a time each, replaced after `max_requests` |
//! | `prefork` | between `min_servers` and `max_servers` workers, idle ones kept between the spare bounds |
//! | `fork` | the master accepts and forks a child per connection, at most `max_servers` at once |
//! | `inetd` | no master: the one connection on stdin/stdout, then exit ([`inetd`]) |
//!
//! A pool's workers form groups: the shared workers of every service with
//! `isolation shared`, and each service with `isolation process` has its
//! own, sized, kept and replaced apart (see `group`).
//!
//! | module | concern |
//! | --- | --- |
//! | [`master`] | the one master loop: signals as intents, reaping, the grace periods, `dequeue`, `sig_passthrough`; `fork`'s accepting |
//! | `group` | the groups of workers: the shared workers, and each service's own (`isolation process`) |
//! | `pool` | the worker pools: how many workers, started and retired |
//! | `children` | what the master knows of each child |
//! | [`restart`] | HUP: re-executing with the listening sockets |
//! | [`reload`] | `watch_module`: a service's new module, served without a restart |
//! | [`notify`] | systemd's readiness messages (`Type=notify`) |
//! | [`worker`] | serving inside one worker process |
//! | [`signals`] | the master's signals and what each asks |
//! | [`spawn`] | forking a child |
//! | [`status`] | `prefork`'s busy and idle messages |

mod children;
mod group;
pub mod inetd;
pub mod master;
pub mod notify;
mod pool;
pub mod reload;
pub mod restart;
pub mod signals;
pub mod spawn;
pub mod status;
pub mod worker;
