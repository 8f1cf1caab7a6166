# soak.gp — the proxy's memory over a soak.sh run, from OUT/*/memory.tsv (lib/soak.py's columns).
# gnuplot -e "dir='OUT'; out='x.png'; title='...'" soak.gp
set terminal pngcairo size 1000,450 font ",10"
set output out
set title title noenhanced
set datafile separator "\t"
set key bottom right
set grid
set autoscale xfix
set xlabel "minutes since the proxy started"
set ylabel "MB"
set yrange [0:*]
kam = dir."/kamailio/memory.tsv"
has_kam = system("[ -s '".kam."' ] && echo 1 || echo 0") + 0
sd = dir."/sipdispatch/memory.tsv"
# the Kamailio line only when KAMAILIO=1 ran
kamline = has_kam ? sprintf(", '%s' skip 1 using ($1/60):2 with lines lw 2 title 'Kamailio 5.6 PSS (processes summed)'", kam) : ""
eval "plot sd skip 1 using ($1/60):2 with lines lw 2 title 'sipdispatch PSS', ".\
     "sd skip 1 using ($1/60):4 with lines title 'sipdispatch Go heap in use' noenhanced, ".\
     "sd skip 1 using ($1/60):6 with lines dt 2 title 'sipdispatch Go runtime total (sys)'".kamline
