#!/usr/bin/perl
# The line-echo benchmark protocol on Perl's Net::Server::Multiplex (one
# process, IO::Multiplex): each line L is answered "You said 'L'\r\n";
# after a line containing "quit", or at end of input, the connection closes.
#
#   perl bench/perl/multiplex.pl --port 127.0.0.1:0
#
# Net::Server logs "Binding to TCP port 0 ..." for port 0; once bound, this
# logs "Bound to TCP port N on host H" with the port the kernel chose.
package BenchMultiplex;

use strict;
use warnings;
use base qw(Net::Server::Multiplex);

sub post_bind_hook {
    my $self = shift;
    for my $sock (@{ $self->{server}->{sock} }) {
        $self->log(0, sprintf('Bound to TCP port %d on host %s', $sock->sockport, $sock->sockhost));
    }
}

# STDOUT is tied to the client while mux_* methods run.
sub mux_input {
    my ($self, $mux, $fh, $in_ref) = @_;
    if ($self->{quit}) {
        $$in_ref = '';
        return;
    }
    while ($$in_ref =~ s/\A([^\n]*)\n//) {
        my $line = $1;
        $line =~ s/\r\z//;
        print "You said '$line'\r\n";
        if (index($line, 'quit') >= 0) {
            $self->{quit} = 1;
            $$in_ref = '';
            $mux->shutdown($fh, 1);
            return;
        }
    }
}

# A last line without "\n" is answered too.
sub mux_eof {
    my ($self, $mux, $fh, $in_ref) = @_;
    if (!$self->{quit} && length $$in_ref) {
        print "You said '$$in_ref'\r\n";
    }
    $$in_ref = '';
}

__PACKAGE__->run;
