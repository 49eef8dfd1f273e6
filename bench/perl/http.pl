#!/usr/bin/perl
# The HTTP benchmark's page on Perl's Net::Server::HTTP (PreFork): GET /
# answers 200, text/plain, "Hello from a wasi:http component!\n", as the
# guest-examples/http-hello component does.
#
#   perl bench/perl/http.pl --port 127.0.0.1:0
#
# Once bound this logs "Bound to TCP port N on host H" with the port the
# kernel chose.
package BenchHttp;

use strict;
use warnings;
use base qw(Net::Server::HTTP);

sub default_server_type { 'PreFork' }

sub post_bind_hook {
    my $self = shift;
    for my $sock (grep { $_->NS_proto eq 'TCP' } @{ $self->{server}->{sock} }) {
        $self->log(0, sprintf('Bound to TCP port %d on host %s', $sock->sockport, $sock->sockhost));
    }
    $self->SUPER::post_bind_hook(@_);
}

my $HELLO = "Hello from a wasi:http component!\n";

sub process_http_request {
    my $self = shift;
    # The length lets a client (wrk) see the response's end without
    # waiting for the close.
    print "Content-type: text/plain\r\nContent-length: " . length($HELLO) . "\r\n\r\n";
    print $HELLO;
}

__PACKAGE__->run(log_level => 1);
